"""Kafka records with any bytes at all reach session-tally: a header key that is not UTF-8 is read, not
raised on.

A Kafka header key is a protocol ``String``, but nothing stops a client (librdkafka's kcat, say) from
writing bytes that are not UTF-8 there. aiokafka's record parser decodes header keys strictly and raises
``UnicodeDecodeError`` on such a record, before any consumer code runs: the fetch fails the same way on
every retry and the partition stops for good. :func:`install` wraps aiokafka's record parsing so that a
batch that fails this way is parsed again by aiokafka's own pure-Python parser with header keys decoded
``surrogateescape`` (every byte kept: ``key.encode("utf-8", "surrogateescape")`` gives the bytes back).
Everything else is aiokafka's: the fast C parser stays the rule, the fallback costs nothing until a
record needs it, and records already handed out are not repeated (the fetcher skips offsets below its
position).

The project decides what such a record becomes (docs/topics.md): headers are not part of the contract, so
its value is judged like any other, and wherever its headers are stored or published they are kept as
bytes (base64).
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("session_tally.consumer")

_installed = False


class _TolerantSlice(bytearray):
    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return bytearray.decode(self, encoding, "surrogateescape")


class _TolerantBuffer(bytearray):
    """A record batch's buffer whose slices decode ``surrogateescape`` (only header keys are decoded)."""

    def __getitem__(self, index: Any) -> Any:
        item = bytearray.__getitem__(self, index)
        return _TolerantSlice(item) if isinstance(index, slice) else item


def _tolerant_classes() -> tuple[type, type]:
    from aiokafka.errors import CorruptRecordException
    from aiokafka.record.default_records import _DefaultRecordBatchPy
    from aiokafka.record.legacy_records import LegacyRecordBatch
    from aiokafka.record.memory_records import _MemoryRecordsPy

    class TolerantBatch(_DefaultRecordBatchPy):  # type: ignore[misc]
        def __iter__(self) -> TolerantBatch:
            self._maybe_uncompress()
            self._buffer: bytearray = _TolerantBuffer(self._buffer)
            return self

    class TolerantMemoryRecords(_MemoryRecordsPy):  # type: ignore[misc]
        """aiokafka's pure-Python MemoryRecords.next_batch, with TolerantBatch for format v2 batches."""

        def next_batch(self, *_args: Any) -> Any:
            next_slice = self._next_slice
            if next_slice is None:
                return None
            if len(next_slice) < self.MIN_SLICE:
                raise CorruptRecordException("Record size is less than the minimum record overhead")
            self._cache_next()
            magic = next_slice[self.MAGIC_OFFSET]
            return TolerantBatch(next_slice) if magic >= 2 else LegacyRecordBatch(next_slice, magic)

    return TolerantBatch, TolerantMemoryRecords


def _is_header_decode_error(exc: BaseException) -> bool:
    return isinstance(exc, UnicodeDecodeError) or isinstance(exc.__cause__, UnicodeDecodeError)


def install() -> None:
    """Patch aiokafka's fetcher once per process (idempotent)."""
    global _installed
    if _installed:
        return
    from aiokafka.consumer import fetcher
    from aiokafka.errors import CorruptRecordException

    fast = fetcher.MemoryRecords
    _batch, tolerant_records = _tolerant_classes()

    class KeepBytes:
        """aiokafka's MemoryRecords that also keeps the fetched bytes, for a tolerant second parse."""

        __slots__ = ("_inner", "data")

        def __init__(self, data: bytes) -> None:
            self.data = data
            self._inner = fast(data)

        def has_next(self) -> bool:
            return bool(self._inner.has_next())

        def next_batch(self) -> Any:
            return self._inner.next_batch()

        def size_in_bytes(self) -> int:
            return int(self._inner.size_in_bytes())

    original = fetcher.PartitionRecords._unpack_records

    def unpack_records(self: Any) -> Any:
        try:
            yield from original(self)
        except (UnicodeDecodeError, CorruptRecordException) as exc:
            data = getattr(self._records, "data", None)
            if data is None or not _is_header_decode_error(exc):
                raise
            log.warning("%s: a record batch holds a header key that is not UTF-8; parsed byte for byte", self._tp)
            self._records = tolerant_records(data)
            yield from original(self)

    fetcher.MemoryRecords = KeepBytes
    fetcher.PartitionRecords._unpack_records = unpack_records
    _installed = True
