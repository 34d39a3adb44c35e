"""Options that several commands share."""

from __future__ import annotations

import argparse

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
