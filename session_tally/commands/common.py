"""Options that several commands share."""

from __future__ import annotations

import argparse
from typing import Any

from producers.kafka_access import KafkaTarget
from session_tally.config import Settings, Topics


def add_kafka_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--bootstrap",
        "--bootstrap-servers",
        dest="bootstrap",
        default=None,
        metavar="HOST:PORT",
        help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS or 127.0.0.1:9092)",
    )
    p.add_argument(
        "--topic-prefix",
        default=None,
        metavar="PREFIX",
        help="prefix of the topic names (default: $SESSION_TALLY_TOPIC_PREFIX, usually empty)",
    )


def kafka_target(args: argparse.Namespace) -> tuple[KafkaTarget, Topics]:
    from dataclasses import replace

    settings = Settings.from_env()
    topics = settings.topics if args.topic_prefix is None else Topics.from_env(args.topic_prefix)
    kafka = replace(settings.kafka, bootstrap_servers=args.bootstrap) if args.bootstrap else settings.kafka
    return kafka, topics


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The settings of the environment with ``--bootstrap`` and ``--topic-prefix`` applied."""
    settings = Settings.from_env()
    if args.topic_prefix is not None:
        settings = settings.replace(topics=Topics.from_env(args.topic_prefix))
    if args.bootstrap:
        settings = settings.replace(kafka_bootstrap_servers=args.bootstrap)
    return settings


async def migrated_engine(settings: Settings) -> Any:
    """An engine on the database, migrated first (idempotent: what a worker does at start-up)."""
    import asyncio

    from storage.db import async_engine, upgrade

    await asyncio.to_thread(upgrade, settings.database_url, settings.db_schema)
    return async_engine(settings.database_url, settings.db_schema, pool_size=1)


class Progress:
    """A progress line on stderr at most once a second: rewritten in place on a terminal, else one line
    each time (logs). ``done()`` clears the line on a terminal."""

    def __init__(self, label: str, interval_s: float = 1.0) -> None:
        import sys
        import time

        self.label = label
        self.interval_s = interval_s
        self.tty = sys.stderr.isatty()
        self.started = time.monotonic()
        self._last = self.started
        self._shown = False

    def __call__(self, text: str, force: bool = False) -> None:
        import sys
        import time

        now = time.monotonic()
        if not force and now - self._last < self.interval_s:
            return
        self._last = now
        self._shown = True
        line = f"{self.label}: {text} ({now - self.started:.0f} s)"
        print(line.ljust(79) if self.tty else line, end="\r" if self.tty else "\n", file=sys.stderr, flush=True)

    def done(self) -> None:
        import sys

        if self.tty and self._shown:
            print(" " * 79, end="\r", file=sys.stderr, flush=True)
