"""Logging of the long-running commands (worker, producers): text lines (default) or JSON lines.

- ``--log-format text``: ``time level logger: message``, and the fields of a record (event id, topic,
  partition, offset) in brackets after the message when it has them.
- ``--log-format json``: one JSON object a line (python-json-logger: it formats the standard library's
  records, so every module's ``logging.getLogger(...)`` call, aiokafka's and FastStream's included, is
  JSON without touching a call site), with ``time`` (RFC 3339, UTC), ``level``, ``logger``,
  ``message``, and where one applies ``event_id``, ``topic``, ``partition``, ``offset`` (from
  ``extra=``, or from the batch being handled: consumers/log_context.py), ``exc_info`` for a traceback.

Both go to stderr. The few lines that say a process is ready or stopped (:func:`announce`) go to stdout
as the bare message in text mode (scripts and tests look for ``session-tally worker ready: {...}``) and
as a JSON record with the same message in json mode.

Kafka's client library logs every failed attempt while a broker is away: hundreds of identical lines a
second for the length of an outage. ``RepeatFilter`` lets the first line of each kind through and then
one per window, saying how many like it it held back, so an outage reads as a few lines per window and
the log still shows when it started, that it went on, and when it ended. session-tally's own lines are
never held back.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from consumers.log_context import LOG_FIELDS

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS = ("text", "json")
REPEAT_WINDOW_S = 10.0
THROTTLED_LOGGERS = ("aiokafka",)
ANNOUNCE_LOGGER = "session_tally.announce"
#: the fields a text line shows after its message, in this order, when the record has them
TEXT_FIELDS = ("event_id", "topic", "partition", "partitions", "offset")


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


class ContextFilter(logging.Filter):
    """Copies the fields of the batch being handled (consumers.log_context) onto each record; a field
    the record already has (``extra=``) is kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = LOG_FIELDS.get()
        if fields:
            for key, value in fields.items():
                if not hasattr(record, key):
                    setattr(record, key, value)
        return True


class TextFormatter(logging.Formatter):
    """:data:`FORMAT`, then ``[event_id=... topic=... partition=... offset=...]`` when the record has them."""

    def __init__(self) -> None:
        super().__init__(FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = [f"{k}={getattr(record, k)}" for k in TEXT_FIELDS if getattr(record, k, None) is not None]
        if not fields:
            return line
        head, sep, rest = line.partition("\n")  # a traceback stays below the first line
        return f"{head} [{' '.join(fields)}]{sep}{rest}"


def json_formatter() -> logging.Formatter:
    from pythonjsonlogger.json import JsonFormatter

    class Formatter(JsonFormatter):
        def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
            return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    return Formatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
    )


def _formatter(fmt: str) -> logging.Formatter:
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: expected one of {', '.join(FORMATS)}")
    return json_formatter() if fmt == "json" else TextFormatter()


def configure(level: str, fmt: str = "text") -> None:
    """Root handler on stderr (``fmt``: text or json) with :class:`RepeatFilter` and :class:`ContextFilter`;
    the announcement logger on stdout; Python's warnings through logging."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(level.upper())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_formatter(fmt))
    handler.addFilter(RepeatFilter())
    handler.addFilter(ContextFilter())
    root.addHandler(handler)
    _announcer(fmt, replace=True)
    logging.captureWarnings(True)


def _announcer(fmt: str = "text", replace: bool = False) -> logging.Logger:
    logger = logging.getLogger(ANNOUNCE_LOGGER)
    if logger.handlers and not replace:
        return logger
    for old in list(logger.handlers):
        logger.removeHandler(old)
    out = logging.StreamHandler(sys.stdout)
    out.setFormatter(logging.Formatter("%(message)s") if fmt == "text" else _formatter(fmt))
    logger.addHandler(out)
    logger.setLevel(logging.INFO)  # shown whatever --log-level says: scripts wait for these lines
    logger.propagate = False
    return logger


def announce(message: str, **fields: Any) -> None:
    """A line that says a process is ready or stopped, on stdout (see the module's docstring)."""
    _announcer().info(message, extra=fields or None)
