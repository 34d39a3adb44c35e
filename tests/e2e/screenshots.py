"""Take the documentation's screenshots of a running web app with the demo history (docs/images/).

    session-tally demo --then stay          # or a worker + `session-tally web` on the demo history
    python -m tests.e2e.screenshots --url http://127.0.0.1:8000/ --out docs/images

Signs in as the demo users in Debian's headless Chromium (the browser of the e2e tests) and saves the
Meetings tab (program admin and participant), the Edit modal, the Configurations screen, the program
settings as an admin reads them, and the admin audit page.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from session_tally.demo_history import DEMO_LOGINS
from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS

PASSWORDS = {user: password for user, password, _what in DEMO_LOGINS}


def _page(browser: Any, base: str, user: str, height: int = 900) -> Any:
    context = browser.new_context(viewport={"width": 1200, "height": height}, device_scale_factor=1)
    page = context.new_page()
    page.goto(base + "login")
    page.fill("input[name=user]", user)
    page.fill("input[name=password]", PASSWORDS[user])
    page.click("button[type=submit]")
    page.wait_for_url(base)
    return page


def take(base: str, out: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    saved: list[Path] = []

    def shot(page: Any, name: str, **options: Any) -> None:
        path = out / name
        page.screenshot(path=str(path), **options)
        saved.append(path)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        admin = _page(browser, base, "alex", height=1000)
        admin.goto(base + "paths/path-ada")
        admin.locator("#fig-authorized").wait_for()
        shot(admin, "meetings-tab.png")
        admin.click("#edit-hours-button")
        admin.fill("#edit-hours-value", "16")
        admin.fill("#edit-hours-note", "Extension approved by the sponsor for the last sessions of the quarter.")
        shot(admin, "edit-modal.png")
        admin.keyboard.press("Escape")
        admin.goto(base + "programs/new")
        admin.fill("#name", "Executive Mentoring")
        admin.fill("#authorized_hours", "30")
        shot(admin, "configurations.png", full_page=True)
        admin.goto(base + "programs/prog-leadership")
        shot(admin, "program-settings.png", full_page=True)
        admin.goto(base + "programs/prog-leadership/audit")
        shot(admin, "audit.png", full_page=True)
        learner = _page(browser, base, "pat", height=1000)
        learner.goto(base + "paths/path-ada")
        learner.locator("#fig-authorized").wait_for()
        shot(learner, "meetings-tab-participant.png")
        browser.close()
    return saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000/", help="the web app's URL")
    parser.add_argument("--out", default="docs/images", help="folder for the PNG files")
    args = parser.parse_args()
    base = args.url if args.url.endswith("/") else args.url + "/"
    for path in take(base, Path(args.out)):
        print(path)


if __name__ == "__main__":
    main()
