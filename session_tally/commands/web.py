"""`session-tally web`: the Session Management screens (Configurations, program settings, organizations,
each path's Meetings tab, the admin audit) as a web app on top of the pipeline (see docs/web.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

DEMO_USERS = Path(__file__).resolve().parents[2] / "web" / "demo_users.toml"

EPILOG = """\
examples (after `make up` and `. .services/env`, with a worker running):
  session-tally web                                   # http://127.0.0.1:8000/, the demo users
  session-tally web --port 8080 --users users.toml    # your own users file (format: docs/web.md)
  session-tally web --hash-password < password.txt    # print the hash to put in a users file

It reads the tallies and statuses topics (from the beginning) and the rejected topic, and PostgreSQL
for program settings and the admin-only audit; it publishes ordinary events to the input topics with
the signed-in user as the actor. GET /healthz answers 200 once it has caught up with the topics.
Environment: SESSION_TALLY_WEB_HOST, SESSION_TALLY_WEB_PORT, SESSION_TALLY_WEB_USERS,
SESSION_TALLY_WEB_SECRET (key of the session cookies; random per start when unset), and the usual
KAFKA_BOOTSTRAP_SERVERS, DATABASE_URL, SESSION_TALLY_DB_SCHEMA, SESSION_TALLY_TOPIC_PREFIX.
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "web",
        help="serve the Session Management screens (Meetings tab, Configurations) on top of the pipeline",
        description="Serve the Session Management web app: a client of the pipeline's topics and database.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument(
        "--hash-password",
        action="store_true",
        help="read a password from stdin, print its scrypt hash for a users file, and exit",
    )
    p.set_defaults(func=run, setting_flags="web")  # --host, --port, --users: cli.py adds them


def run(args: argparse.Namespace) -> int:
    from web.users import UsersFileError, hash_password

    if args.hash_password:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            print("session-tally web: no password on stdin", file=sys.stderr)
            return 2
        print(hash_password(password))
        return 0

    import logging

    import uvicorn

    from session_tally.config import Settings
    from web.app import create_app
    from web.users import Users

    settings = Settings.from_command_line(args)  # the flags override their variables
    web = settings.web
    host, port = web.host, web.port
    users_file = web.users_file or str(DEMO_USERS)
    try:
        users = Users.load(users_file)
    except UsersFileError as exc:
        print(f"session-tally web: {exc}", file=sys.stderr)
        return 2
    if Path(users_file).resolve() == DEMO_USERS:
        print("session-tally web: signing in with the DEMO users (web/demo_users.toml); use --users for real ones")
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings, users, secret=web.secret or None)
    print(f"session-tally web: http://{host}:{port}/ ({len(users)} users from {users_file})", flush=True)
    config = uvicorn.Config(
        app, host=host, port=port, log_level=args.log_level, timeout_graceful_shutdown=3, access_log=False
    )
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 2
