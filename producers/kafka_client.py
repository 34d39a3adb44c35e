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


def send_now(producer: Any, topic: str) -> bool:
    """End the linger of ``topic``'s open batches: they go out at the sender's next turn instead of
    ``linger_ms`` later (what aiokafka's own ``flush_for_commit`` does for a transaction, for one topic).

    For a caller that is about to wait for those messages' acknowledgements (``session-tally publish``
    waits for the admin messages before a later path message): the wait is then one round trip. Uses
    aiokafka 0.14's accumulator internals; when they are not there, it does nothing (the batches linger,
    the wait is longer, nothing else changes) and returns False."""
    accumulator = getattr(producer, "_message_accumulator", None)
    batches = getattr(accumulator, "_batches", None)
    waiter = getattr(accumulator, "_waiter_future", None)
    if not isinstance(batches, dict) or waiter is None:
        return False
    closed = False
    for tp, queue in batches.items():
        if getattr(tp, "topic", None) != topic:
            continue
        for batch in queue:
            builder = getattr(batch, "_builder", None)
            if builder is not None and hasattr(builder, "close"):
                builder.close()
                closed = True
    if closed and not waiter.done():
        waiter.set_result(None)
    return True
