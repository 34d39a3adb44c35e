"""The `session-tally` command line.

Each sub-command lives in its own module of session_tally/commands/ exposing ``register(subparsers)``;
modules import their heavy
dependencies (FastStream, aiokafka, SQLAlchemy) inside the functions that need them, so that
``session-tally replay`` starts fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

# the command modules, in the order --help lists them
COMMAND_MODULES = [
    "session_tally.commands.replay",
    "session_tally.commands.services",
    "session_tally.commands.topics",
    "session_tally.commands.db",
    "session_tally.commands.worker",
    "session_tally.commands.publish",
    "session_tally.commands.snapshot",
    "session_tally.commands.offsets",
    "session_tally.commands.rejected",
    "session_tally.commands.tallies",
    "session_tally.commands.audit",
    "session_tally.commands.contract",
    "session_tally.commands.simulate",
    "session_tally.commands.demo",
    "session_tally.commands.web",
    "session_tally.commands.bench",
    "session_tally.commands.config",
]


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The whole command line; the flags that override settings only for the command ``argv`` runs (for
    every command when ``argv`` is None)."""
    parser = argparse.ArgumentParser(
        prog="session-tally",
        description=(
            "Session management backend: consumes meeting and program events from Kafka, applies each "
            "program's late-cancel and auto-confirm policy, keeps state in PostgreSQL and publishes per-path "
            "hour tallies and meeting statuses."
        ),
        epilog="Run 'session-tally COMMAND --help' for the options of one command.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a command not built yet
            if exc.name == name:
                continue
            raise
        module.register(sub)
    _add_setting_flags(sub, argv)
    return parser


def _add_setting_flags(sub: Any, argv: Sequence[str] | None) -> None:
    """A command that declares ``set_defaults(setting_flags=NAME)`` gets the flags session_tally/config.py
    declares for NAME (``--batch-size`` and the others). Building them imports pydantic-settings, which
    `replay` and the other commands do without, so only the command being run gets them."""
    wanted = None if argv is None else next((arg for arg in argv if not arg.startswith("-")), "")
    for name, command in sub.choices.items():
        declared = command.get_default("setting_flags")
        if declared and (wanted is None or name == wanted):
            from session_tally.config import Settings
            from session_tally.settings_fields import add_setting_flags

            add_setting_flags(command, declared, Settings)


def main(argv: list[str] | None = None) -> int:
    from producers import kafka_errors

    kafka_errors.install()  # remembers why a Kafka connection failed, for the one-line message
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except BrokenPipeError:  # e.g. `session-tally replay ... | head`
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if _is_settings_error(exc):  # a variable with a value that cannot work: one line, no traceback
            print(f"session-tally: {exc}", file=sys.stderr)
            return 2
        unreachable = _unreachable_service(exc)
        if unreachable is None:
            raise
        print(f"session-tally {args.command}: {unreachable}", file=sys.stderr)
        return 2
    return int(result or 0)


def _is_settings_error(exc: BaseException) -> bool:
    from session_tally.settings_fields import SettingsError

    return isinstance(exc, SettingsError)


def _unreachable_service(exc: BaseException) -> str | None:
    """A one-line explanation when ``exc`` says PostgreSQL or Kafka cannot be reached or used, or that a
    setting cannot work (else None)."""
    from sqlalchemy.exc import OperationalError

    from producers.kafka_errors import kafka_problem
    from session_tally.endpoint import EndpointError
    from session_tally.topics import TopicsError

    hint = "start the services (`make up`, then `. .services/env`) or set KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL"
    if isinstance(exc, OperationalError):
        first = str(exc.orig or exc).strip().splitlines()[0]
        return f"cannot reach PostgreSQL: {first}; {hint}"
    if isinstance(exc, TopicsError | EndpointError):
        return str(exc)
    return kafka_problem(exc)


if __name__ == "__main__":
    sys.exit(main())
