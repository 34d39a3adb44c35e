"""What every Kafka producer of session-tally needs beside aiokafka's own settings."""

from __future__ import annotations

import asyncio
from typing import Any

METADATA_BACKOFF_S = 0.1  # Kafka's retry.backoff.ms default


def throttle_metadata_updates(client: Any, min_interval_s: float = METADATA_BACKOFF_S) -> None:
    """Give aiokafka's producer a back-off between metadata updates.

    aiokafka 0.14's sender loop asks for a metadata update and waits for it whenever a partition with
    records to send has no known leader. When the broker is down (a restart, say), the connection is
    refused at once on a local network, the update fails at once and the loop spins: measured here, one
    CPU core and about 8,000 log lines a second for as long as the broker is away. This wraps the
    client's ``force_metadata_update`` so that updates start at most every ``min_interval_s``; callers
    wait for the delayed update as they waited for the immediate one."""
    original = client.force_metadata_update
    loop = asyncio.get_running_loop()
    last = [float("-inf")]
    delayed: list[asyncio.Future[Any] | None] = [None]

    def throttled() -> Any:
        wait = last[0] + min_interval_s - loop.time()
        if wait <= 0:
            last[0] = loop.time()
            return original()
        pending = delayed[0]
        if pending is not None and not pending.done():
            return asyncio.shield(pending)

        async def later() -> Any:
            await asyncio.sleep(wait)
            last[0] = loop.time()
            return await original()

        delayed[0] = task = asyncio.ensure_future(later())
        return asyncio.shield(task)

    client.force_metadata_update = throttled
