"""The cyclic garbage collector's settings for long runs (the worker, the producers process, replay).

Kept apart from the composition root so that `replay` imports nothing of Kafka or PostgreSQL for it.
"""

from __future__ import annotations

GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    """After start-up: the modules, caches and connections made so far are moved out of the collector's
    sight (``gc.freeze``: never scanned again), and the youngest generation is collected every 50,000
    allocations instead of 700. A batch allocates hundreds of thousands of short-lived objects that
    reference counting frees; with the default thresholds the cyclic collector ran hundreds of times
    per batch and took about a seventh of a worker's time (profiles in docs/performance.md)."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
