"""Kafka and PostgreSQL run as plain local processes, for machines without a Docker engine.

Used by ``session-tally services``; nothing else in the application imports it. Every process it starts
listens on 127.0.0.1 only and keeps its data, logs and pid under the services directory (``.services/``).
"""

from session_tally.localsvc.proc import ServiceError, services_dir

__all__ = ["ServiceError", "services_dir"]
