"""What `session-tally config show` and `config table` print, made from the settings classes alone.

Invariants: the Markdown table lists every variable of every settings class (config.SETTINGS_CLASSES),
in declaration order, with the default, the flags that override it and its meaning, so README's
"Configuration" section (the table between :data:`BEGIN` and :data:`END`) is exactly
:func:`markdown_table`'s output and a unit test fails when they drift; ``show`` never prints a secret.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from session_tally.config import SETTINGS_CLASSES, Settings
from session_tally.settings_fields import Leaf, as_text, leaves, shown_value

BEGIN = "<!-- BEGIN session-tally config table (generated: `session-tally config table --write README.md`) -->"
END = "<!-- END session-tally config table -->"
PREFIXES = ("SESSION_TALLY_", "KAFKA_")
# variables that are read, but not by the product (the test suite's); `config show` does not call them unknown
OTHER_KNOWN = {"SESSION_TALLY_CHROMIUM": "tests/e2e: the Chromium binary the browser tests drive"}


def all_leaves() -> list[Leaf]:
    return [leaf for model in SETTINGS_CLASSES for leaf in leaves(model)]


def _default_text(leaf: Leaf) -> str:
    shown = leaf.extra("shown_default")
    if shown:
        return str(shown)
    default = leaf.field.get_default(call_default_factory=True)
    text = as_text(default)
    return f"`{text}`" if text else "unset"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table() -> str:
    """The Configuration table (Markdown, one row per variable, ending with a newline)."""
    lines = ["| variable | default | flag | meaning |", "|---|---|---|---|"]
    for leaf in all_leaves():
        flags = ", ".join(f"`{flag}`" for flag in leaf.flags)
        secret = " (secret: never shown)" if leaf.secret else ""
        meaning = f"{leaf.field.description or ''}{secret}"
        lines.append(f"| `{leaf.name}` | {_cell(_default_text(leaf))} | {_cell(flags)} | {_cell(meaning)} |")
    return "\n".join(lines) + "\n"


def with_table(document: str, table: str | None = None) -> str:
    """``document`` with the text between the markers replaced by the table; ValueError without markers."""
    start, end = document.find(BEGIN), document.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the markers are missing: {BEGIN} ... {END}")
    body = table if table is not None else markdown_table()
    return document[: start + len(BEGIN)] + "\n" + body + document[end:]


@dataclass(frozen=True)
class Shown:
    variable: str
    value: str
    source: str  # "environment" or "default"
    secret: bool


def show(environ: Mapping[str, str] | None = None) -> tuple[list[Shown], list[str]]:
    """Every variable's current value (secrets masked) and where it came from, and the variables of the
    environment that look like ours but are not (a typo: ``SESSION_TALLY_BATCHSIZE``).
    Raises SettingsError (one line) when a value is bad, like every command."""
    from session_tally.config import LocalServices

    env: Mapping[str, str] = os.environ if environ is None else environ
    values: list[tuple[Leaf, Any]] = []
    for model, settings in ((Settings, Settings.from_env(env)), (LocalServices, LocalServices.from_env(env))):
        values += [(leaf, leaf.value_of(settings)) for leaf in leaves(model)]
    rows = [
        Shown(leaf.name, shown_value(leaf, value), "environment" if env.get(leaf.name) else "default", leaf.secret)
        for leaf, value in values
    ]
    known = {row.variable for row in rows} | set(OTHER_KNOWN)
    unknown = sorted(name for name in env if name.startswith(PREFIXES) and name not in known)
    return rows, unknown
