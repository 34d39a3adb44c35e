"""The worker's log filter: repeated library lines are held back and counted, our own never."""

from __future__ import annotations

import logging

from session_tally.logs import RepeatFilter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(name: str, msg: str, *args: object, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_repeats_of_a_library_line_pass_once_per_window_with_the_count_held_back() -> None:
    clock = Clock()
    f = RepeatFilter(window_s=10, clock=clock)
    passed = []
    for i in range(250):  # 25 s of a line every 0.1 s, with a different argument each time
        clock.now = i * 0.1
        r = record("aiokafka", "Unable connect to node with id %s: %s", 1, f"attempt {i}")
        if f.filter(r):
            passed.append((clock.now, r.getMessage()))
    assert [round(t, 1) for t, _ in passed] == [0.0, 10.0, 20.0]
    assert passed[0][1] == "Unable connect to node with id 1: attempt 0"
    assert passed[1][1] == "Unable connect to node with id 1: attempt 100 [99 more like this in the last 10 s]"
    assert passed[2][1].endswith("[99 more like this in the last 10 s]")


def test_different_lines_levels_and_loggers_are_counted_apart() -> None:
    clock = Clock()
    f = RepeatFilter(window_s=10, clock=clock)
    assert f.filter(record("aiokafka", "a"))
    assert f.filter(record("aiokafka", "b"))
    assert f.filter(record("aiokafka", "a", level=logging.WARNING))
    assert f.filter(record("aiokafka.consumer.fetcher", "a"))
    assert not f.filter(record("aiokafka", "a"))


def test_session_tally_lines_are_never_held_back() -> None:
    f = RepeatFilter(window_s=10, clock=Clock())
    assert all(f.filter(record("session_tally.consumer", "batch of %d records failed", 5)) for _ in range(100))
