"""The web app end to end: a real worker and `session-tally web` as processes on the real Kafka and
PostgreSQL (this module's own topic prefix and schema), driven by Debian's headless Chromium through
Playwright (``executable_path``: nothing downloads a browser).

Without ``/usr/bin/chromium`` the tests skip on a laptop and FAIL under CI (``CI=true``, set by
``.ci/run``, which installs Debian's chromium).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from session_tally.config import Settings, Topics
from tests.conftest import delete_topics
from tests.integration.pipeline_helpers import ROOT, start_worker, stop_worker, worker_env
from tests.needs import unavailable

CHROMIUM = os.environ.get("SESSION_TALLY_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

#: (id, role, password, memberships) of the users file the web app of these tests reads
PASSWORDS = {"sue": "sue-pw-1", "ada": "ada-pw-1", "pat": "pat-pw-1", "fay": "fay-pw-1"}


def chromium_or_fail() -> str:
    path = shutil.which(CHROMIUM) or (CHROMIUM if os.path.exists(CHROMIUM) else None)
    if path is None:
        unavailable(f"Debian's chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    assert path is not None
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class E2E:
    """One pipeline and one web app for the module: settings, ids, URLs."""

    def __init__(self, settings: Settings, base_url: str, org: str, log_dir: Path) -> None:
        self.settings = settings
        self.base_url = base_url
        self.org = org
        self.log_dir = log_dir
        self.story: dict[str, Any] = {}

    def url(self, path: str) -> str:
        return self.base_url + path


def write_users(path: Path, org: str, member_paths: list[str]) -> None:
    from web.users import hash_password

    paths = ", ".join(f'"{p}"' for p in member_paths)
    path.write_text(
        f"""
[[user]]
id = "sue"
name = "Sue Support"
role = "support"
password_hash = "{hash_password(PASSWORDS["sue"])}"

[[user]]
id = "ada"
name = "Ada Admin"
role = "program_admin"
orgs = ["{org}"]
password_hash = "{hash_password(PASSWORDS["ada"])}"

[[user]]
id = "pat"
name = "Pat Participant"
role = "participant"
paths = [{paths}]
password_hash = "{hash_password(PASSWORDS["pat"])}"

[[user]]
id = "fay"
name = "Fay Facilitator"
role = "facilitator"
paths = [{paths}]
password_hash = "{hash_password(PASSWORDS["fay"])}"
"""
    )


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"web app exited with {proc.returncode}: {log.read_text(errors='replace')[-3000:]}"
        try:
            last = httpx.get(url + "/healthz", timeout=2.0)
            if last.status_code == 200:
                return
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"web app not healthy after {timeout_s}s: {last!r}")


@pytest.fixture(scope="module")
def e2e(kafka_bootstrap: str, database_url: str, db_engine: Any, tmp_path_factory: Any) -> Iterator[E2E]:
    from sqlalchemy import text

    from session_tally.topics import ensure_topics

    chromium_or_fail()
    tag = uuid.uuid4().hex[:8]
    prefix, schema = f"t{tag}e2e.", f"t_e2e_{tag}"
    topics = Topics.from_env(prefix=prefix)
    assert asyncio.run(ensure_topics(kafka_bootstrap, topics)) == []
    with db_engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        database_url=database_url,
        db_schema=schema,
        group_id=f"{prefix}session-tally",
        topics=topics,
    )
    log_dir = tmp_path_factory.mktemp("e2e")
    org = f"org-e2e-{tag}"
    users = log_dir / "users.toml"
    write_users(users, org, ["path-e2e-1"])
    worker = start_worker(settings, None, log_dir / "worker.log", park_timeout_s=60.0)
    port = free_port()
    web_log = log_dir / "web.log"
    web = subprocess.Popen(
        [sys.executable, "-m", "session_tally", "web", "--port", str(port), "--users", str(users)],
        cwd=ROOT,
        env=worker_env(settings) | {"SESSION_TALLY_WEB_SECRET": uuid.uuid4().hex},
        stdout=open(web_log, "ab"),  # noqa: SIM115 - closed with the process
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, web, web_log)
        yield E2E(settings, base, org, log_dir)
    finally:
        web.terminate()
        try:
            web.wait(15)
        except subprocess.TimeoutExpired:
            web.kill()
            web.wait(5)
        rc = stop_worker(worker)
        asyncio.run(delete_topics(kafka_bootstrap, [*topics.inputs, *topics.outputs]))
        with db_engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        assert rc == 0, (log_dir / "worker.log").read_text(errors="replace")[-3000:]


@pytest.fixture(scope="module")
def browser(e2e: E2E) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_or_fail(), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def signed_in(browser: Any, e2e: E2E, user: str) -> Any:
    """A new browser context (its own cookies) signed in as ``user``; returns its page."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    context.set_default_timeout(20_000)
    page = context.new_page()
    page.goto(e2e.url("/login"))
    page.fill("input[name=user]", user)
    page.fill("input[name=password]", PASSWORDS[user])
    page.click("button[type=submit]")
    page.wait_for_url(e2e.url("/"))
    return page
