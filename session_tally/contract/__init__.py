"""The published contract: JSON Schemas, the AsyncAPI document and examples, generated from the code.

:func:`generated_files` is the single place that decides which files the contract folder holds and what
they contain (deterministic bytes); :func:`differences` compares a folder with it (what
``session-tally contract check`` and the test suite run, so that the checked-in files never drift from
the models).
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_DIR", "differences", "generated_files", "write"]

DEFAULT_DIR = Path("docs/contract")
#: what the contract folder may hold; other files there are reported as stale
_MANAGED = ("asyncapi.json", "README.md", "schemas", "examples")

_README = """\
# Generated contract files

Do not edit: `session-tally contract generate` writes every file here from the code (the pydantic models
of `domain/events.py` and `domain/outputs.py`, the topic settings, the examples), and the test suite runs
`session-tally contract check`, which fails when these files differ from what the code generates.
The message reference is [../contract.md](../contract.md); publishers start at
[../publishers.md](../publishers.md).

| file | what |
|---|---|
| `asyncapi.json` | AsyncAPI 3.0 document of the five topics (channels, keys, headers, bindings, examples) |
| `schemas/envelope.json` | JSON Schema (2020-12) of the envelope every input event has |
| `schemas/events/<type>.json` | JSON Schema of each input event type, one file per type |
| `schemas/outputs/path-tally.json` | a message of `session-mgmt.path-tallies` |
| `schemas/outputs/meeting-status.json` | a message of `session-mgmt.meeting-statuses` |
| `schemas/outputs/rejected.json` | a message of `session-mgmt.rejected` |
| `schemas/replay-document.json` | what `session-tally replay` prints |
| `examples/events.jsonl` | a small story of input events, one per line (`session-tally replay` or `publish` it) |
"""


def _json(doc: Any) -> bytes:
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def generated_files() -> dict[str, bytes]:
    """Relative path (POSIX) -> content of every file of the contract folder."""
    from session_tally.contract.asyncapi import asyncapi_document
    from session_tally.contract.examples import example_jsonl
    from session_tally.contract.schemas import all_schemas

    files = {"README.md": _README.encode(), "asyncapi.json": _json(asyncapi_document())}
    files.update({f"schemas/{name}": _json(schema) for name, schema in all_schemas().items()})
    files["examples/events.jsonl"] = example_jsonl()
    return files


def _present(folder: Path) -> set[str]:
    found: set[str] = set()
    for name in _MANAGED:
        path = folder / name
        if path.is_file():
            found.add(name)
        elif path.is_dir():
            found.update(p.relative_to(folder).as_posix() for p in path.rglob("*") if p.is_file())
    return found


def differences(folder: Path, max_diff_lines: int = 12) -> list[str]:
    """One line (or a short diff) per file of ``folder`` that is missing, stale or differs; [] when equal."""
    wanted = generated_files()
    present = _present(folder)
    out: list[str] = []
    for name in sorted(set(wanted) - present):
        out.append(f"missing: {name}")
    for name in sorted(present - set(wanted)):
        out.append(f"stale (no longer generated): {name}")
    for name in sorted(set(wanted) & present):
        have = (folder / name).read_bytes()
        if have == wanted[name]:
            continue
        diff = list(
            difflib.unified_diff(
                have.decode("utf-8", "replace").splitlines(),
                wanted[name].decode("utf-8", "replace").splitlines(),
                f"{name} (checked in)",
                f"{name} (generated)",
                n=1,
                lineterm="",
            )
        )
        changed = sum(1 for line in diff if line[:1] in "+-" and not line.startswith(("+++", "---")))
        shown = diff[: max_diff_lines + 2]
        more = [f"  ... {len(diff) - len(shown)} more diff lines"] if len(diff) > len(shown) else []
        out.append(f"differs: {name} ({changed} lines changed)\n" + "\n".join("  " + d for d in shown + more))
    return out


def write(folder: Path) -> tuple[list[str], list[str]]:
    """Write every generated file into ``folder`` and delete stale ones; returns (written, deleted)."""
    wanted = generated_files()
    written: list[str] = []
    for name, content in wanted.items():
        path = folder / name
        if path.is_file() and path.read_bytes() == content:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        written.append(name)
    deleted = sorted(_present(folder) - set(wanted))
    for name in deleted:
        (folder / name).unlink()
    return written, deleted
