"""`session-tally db upgrade|current`: database migrations (also run at worker start-up)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("db", help="database migrations (upgrade is also run by every worker at start-up)")
    p.add_argument("action", choices=["upgrade"], help="upgrade: create the schema and migrate to the latest revision")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from session_tally.config import Settings
    from storage.db import upgrade

    settings = Settings.from_env()
    revision = upgrade(settings.database_url, settings.db_schema)
    print(f"database schema {settings.db_schema} at revision {revision}")
    return 0
