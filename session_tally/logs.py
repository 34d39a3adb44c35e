"""Logging of the long-running commands (worker, producers).

Kafka's client library logs every failed attempt while a broker is away: hundreds of identical lines a
second for the length of an outage. ``RepeatFilter`` lets the first line of each kind through and then
one per window, saying how many like it it held back, so an outage reads as a few lines per window and
the log still shows when it started, that it went on, and when it ended. session-tally's own lines are
never held back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REPEAT_WINDOW_S = 10.0
THROTTLED_LOGGERS = ("aiokafka",)


class RepeatFilter(logging.Filter):
    """Passes the first record of each (logger, level, message template) per ``window_s``; the next one
    to pass carries the number held back in between."""

    def __init__(
        self,
        window_s: float = REPEAT_WINDOW_S,
        prefixes: tuple[str, ...] = THROTTLED_LOGGERS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.window_s = window_s
        self.prefixes = prefixes
        self.clock = clock
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}  # key -> (window start, held back)

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.prefixes):
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        started, held = self._seen.get(key, (float("-inf"), 0))
        if now - started < self.window_s:
            self._seen[key] = (started, held + 1)
            return False
        self._seen[key] = (now, 0)
        if held:
            record.msg = f"{record.getMessage()} [{held} more like this in the last {now - started:.0f} s]"
            record.args = None
        if len(self._seen) > 10_000:  # messages with ids in their template: keep the table bounded
            self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self.window_s}
        return True


def configure(level: str) -> None:
    """``logging.basicConfig`` with ``RepeatFilter`` on the root handlers."""
    logging.basicConfig(level=level.upper(), format=FORMAT)
    repeat = RepeatFilter()
    for handler in logging.getLogger().handlers:
        handler.addFilter(repeat)
