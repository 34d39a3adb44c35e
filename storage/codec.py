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
