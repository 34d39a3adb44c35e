"""Where an input message goes: its topic and its Kafka key (SPEC section 3), and the partition Kafka's
default (murmur2, the Java client's) partitioner gives a key. ``session-tally publish``, the web app and
the tests route with this; publishers in other languages must do the same (docs/publishers.md)."""

from __future__ import annotations

import json
import re
from typing import Literal

from domain.events import ADMIN_TYPES

TopicKind = Literal["admin", "path"]


def murmur2_hash(key: bytes) -> int:
    """The positive murmur2 hash of ``key`` that Kafka's Java default partitioner takes modulo the count."""
    from aiokafka.partitioner import murmur2

    return int(murmur2(key) & 0x7FFFFFFF)


def murmur2_partition(key: bytes, partitions: int) -> int:
    """The partition of ``key`` among ``partitions`` with the murmur2 partitioner (Kafka's Java default)."""
    return murmur2_hash(key) % partitions


_PATH_ID_RE = re.compile(rb'"path_id"\s*:\s*"([^"\\]*)"')


def route(value: bytes) -> tuple[TopicKind, bytes | None]:
    """Topic kind and key for one raw message (what ``session-tally publish`` uses).

    Organization and program event types go to the admin topic keyed by ``org_id``; everything else to
    the path topic keyed by ``path_id``. A message that cannot be parsed goes to the path topic, keyed by
    its ``path_id`` when one can still be read from the bytes, else unkeyed.
    """
    try:
        obj = json.loads(value)
    except ValueError:  # includes UnicodeDecodeError
        match = _PATH_ID_RE.search(value)
        return "path", (match.group(1) if match else None)
    if not isinstance(obj, dict):
        return "path", None
    if obj.get("type") in ADMIN_TYPES:
        org = obj.get("org_id")
        return "admin", (org.encode("utf-8", "surrogatepass") if isinstance(org, str) else None)
    path = obj.get("path_id")
    return "path", (path.encode("utf-8", "surrogatepass") if isinstance(path, str) else None)
