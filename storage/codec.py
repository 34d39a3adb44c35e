"""JSON out of the pipeline's hot path: every message published and every bulk parameter sent to
PostgreSQL is encoded here, by orjson (several times faster than the standard library's encoder on
these small documents). Output equals ``json.dumps(doc, separators=(",", ":"), ensure_ascii=False)``
for what the pipeline writes (str keys, str/int/float/bool/None/list/dict values); a value orjson
refuses (an integer beyond 64 bits, a lone surrogate) falls back to the standard library."""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps_bytes(value: Any) -> bytes:
    """Compact UTF-8 JSON bytes."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")


def dumps_text(value: Any) -> str:
    """Compact JSON text (a bulk parameter for ``json_to_recordset``, a ``jsonb`` column)."""
    try:
        return orjson.dumps(value).decode("utf-8")
    except TypeError:
        return json.dumps(value, separators=(",", ":"))


def loads_own(text: str) -> Any:
    """Decode JSON that :func:`dumps_text` wrote (read back from PostgreSQL as text), by orjson.

    Only for this process's own documents: orjson reads an integer beyond 64 bits as a float where
    the standard library keeps it exact, and :func:`dumps_text` never writes one (it falls back to
    the standard library for them, which only happens for values the pipeline does not produce)."""
    return orjson.loads(text)
