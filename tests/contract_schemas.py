"""Validate messages against the checked-in contract files (docs/contract/schemas/) the way a consumer in
another language would: JSON parsed with exact decimals, the JSON Schema 2020-12 validator with format
checking. ``closed=True`` also refuses fields the schema does not name (the published schemas allow them,
for forward compatibility; session-tally's own outputs must not carry undocumented fields)."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

REPO = Path(__file__).resolve().parent.parent
CONTRACT = REPO / "docs" / "contract"
SCHEMAS = CONTRACT / "schemas"


def load_json(raw: bytes | str) -> Any:
    """JSON as a consumer should read it: numbers with a fraction as exact decimals (multipleOf 0.01)."""
    return json.loads(raw, parse_float=Decimal)


def _closed(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _closed(v) for k, v in node.items()}
        if "properties" in out and out.get("additionalProperties", True) is True:
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_closed(v) for v in node]
    return node


def _floats(node: Any) -> Any:
    """Decimals as floats, whose repr (shortest round trip) is the decimal's text for short decimals."""
    if isinstance(node, Decimal):
        return float(node)
    if isinstance(node, dict):
        return {k: _floats(v) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [_floats(v) for v in node]
    return node


@cache
def schema(name: str, closed: bool = False) -> Any:
    """The checked-in schema ``schemas/<name>`` (e.g. ``outputs/path-tally.json``)."""
    loaded = load_json((SCHEMAS / name).read_bytes())
    return _closed(copy.deepcopy(loaded)) if closed else loaded


@cache
def validator(name: str, closed: bool = False) -> Draft202012Validator:
    return Draft202012Validator(schema(name, closed), format_checker=Draft202012Validator.FORMAT_CHECKER)


def errors(name: str, instance: Any, closed: bool = False) -> list[str]:
    """Why ``instance`` (parsed JSON, or bytes/str to parse) does not match; [] when it does."""
    if not isinstance(instance, bytes | str):
        instance = json.dumps(_floats(instance))  # back to JSON text, which load_json reads exactly
    instance = load_json(instance)
    found = validator(name, closed).iter_errors(instance)
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message[:300]}" for e in found]


def assert_valid(name: str, instance: Any, closed: bool = False) -> None:
    problems = errors(name, instance, closed)
    assert not problems, f"not valid against {name}: {problems[:5]}"
