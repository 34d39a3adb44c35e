"""How a setting is declared, read and explained: the machinery under session_tally/config.py.

Invariants:

- every leaf field of a settings model is one environment variable: its ``validation_alias`` is the
  variable's name, its ``description`` the meaning shown in README's table and in ``--help``;
- a variable that is unset or empty means "the default" (as it always did);
- a bad value is explained in one line that names the variable, shows the value (masked when secret) and
  states the rule the field keeps (:func:`explain`), whichever check failed: the type, a bound, or a
  rule across fields.

Nothing here knows a particular variable; config.py declares them with :func:`variable`. Nothing here
imports pydantic-settings either (session_tally/settings_env.py does, when the environment is read), so
that building the command line stays fast.
"""

from __future__ import annotations

import argparse
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

MASK = "***"
M = TypeVar("M", bound=BaseModel)


class SettingsError(ValueError):
    """A variable has a value that cannot work; the message names it (shown as one line by the CLI)."""


class BadSetting(ValueError):
    """Raised by a validator for a rule across fields: ``NAME='value': what is wrong`` (one line)."""


def variable(
    name: str,
    default: Any,
    meaning: str,
    *,
    flags: Sequence[str] = (),
    secret: bool = False,
    shown: str | None = None,
    rule: str | None = None,
    masked_url: bool = False,
    flag_meaning: str | None = None,
    metavar: str | None = None,
    **constraints: Any,
) -> Any:
    """A settings field read from the environment variable ``name``.

    ``flags``: the command-line options that override it, as ``"worker --batch-size"`` (the command,
    then the flag); ``secret``: never shown (masked by ``config show``, left out of ``repr``); ``shown``:
    the default as the table words it (else the value); ``rule``: the rule in words when the type and
    bounds do not say it (a pattern, say); ``masked_url``: a URL shown without its passwords;
    ``flag_meaning``: the flags' help when the meaning does not read well there; ``metavar``: the
    flags' placeholder."""
    extra: dict[str, Any] = {"env": name}
    if flags:
        extra["flags"] = list(flags)
    if secret:
        extra["secret"] = True
    if shown is not None:
        extra["shown_default"] = shown
    if rule is not None:
        extra["rule"] = rule
    if masked_url:
        extra["mask"] = "url-password"
    if flag_meaning is not None:
        extra["flag_meaning"] = flag_meaning
    if metavar is not None:
        extra["metavar"] = metavar
    return Field(
        default, validation_alias=name, description=meaning, json_schema_extra=extra, repr=not secret, **constraints
    )


@dataclass(frozen=True)
class Leaf:
    """One variable: where its field sits in the settings (field names from the top model) and its field."""

    path: tuple[str, ...]
    name: str
    field: FieldInfo

    def extra(self, key: str, default: Any = None) -> Any:
        extra = self.field.json_schema_extra
        return extra.get(key, default) if isinstance(extra, dict) else default

    @property
    def secret(self) -> bool:
        return bool(self.extra("secret", False))

    @property
    def flags(self) -> list[str]:
        return list(self.extra("flags", []))

    def value_of(self, settings: BaseModel) -> Any:
        value: Any = settings
        for part in self.path:
            value = getattr(value, part)
        return value


def nested_model(field: FieldInfo) -> type[BaseModel] | None:
    annotation = field.annotation
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def leaves(model: type[BaseModel], path: tuple[str, ...] = ()) -> Iterator[Leaf]:
    """Every variable of ``model``, nested models included, in declaration order."""
    for name, field in model.model_fields.items():
        sub = nested_model(field)
        if sub is not None:
            yield from leaves(sub, (*path, name))
        elif isinstance(field.validation_alias, str):
            yield Leaf((*path, name), field.validation_alias, field)


def leaf_at(model: type[BaseModel], path: Sequence[str | int]) -> Leaf | None:
    return next((leaf for leaf in leaves(model) if leaf.path == tuple(path)), None)


def pick(model: type[BaseModel], environ: Mapping[str, str]) -> dict[str, Any]:
    """What ``environ`` sets for ``model``: field names to values, a nested model as a dict of its own;
    an empty variable is unset."""
    values: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        sub = nested_model(field)
        if sub is not None:
            inner = pick(sub, environ)
            if inner:
                values[name] = inner
        elif isinstance(field.validation_alias, str) and environ.get(field.validation_alias, ""):
            values[name] = environ[field.validation_alias]
    return values


def read_model(model: type[M], environ: Mapping[str, str] | None = None) -> M:
    """A nested settings model (no other source than the environment); :class:`SettingsError` if bad."""
    import os

    try:
        return model.model_validate(pick(model, os.environ if environ is None else environ))
    except ValidationError as exc:
        raise SettingsError(explain(exc, model)) from None


def as_text(value: Any) -> str:
    """A value as its variable spells it (what makes the variable read back as the same value)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        return text.removesuffix(".0")
    return str(value)


def as_env(settings: BaseModel) -> dict[str, str]:
    """Every variable of ``settings``, set to its value (an empty string for "unset")."""
    return {leaf.name: as_text(leaf.value_of(settings)) for leaf in leaves(type(settings))}


# ------------------------------------------------------------------------------------ rules in words


def _optional_inner(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        args = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def rule(field: FieldInfo) -> str:
    """The rule a field keeps, in words: ``must be a whole number >= 1``."""
    explicit = field.json_schema_extra.get("rule") if isinstance(field.json_schema_extra, dict) else None
    if isinstance(explicit, str):
        return explicit
    annotation = _optional_inner(field.annotation)
    if get_origin(annotation) is Literal:
        return "must be one of " + ", ".join(str(choice) for choice in get_args(annotation))
    if annotation is bool:
        return "must be true or false"
    bounds: dict[str, Any] = {}
    for item in field.metadata:  # annotated_types.Ge(ge=1), MinLen(min_length=1), ...
        for kind in ("ge", "gt", "le", "lt", "min_length"):
            if getattr(item, kind, None) is not None:
                bounds[kind] = getattr(item, kind)
    if annotation in (int, float):
        kind = "a whole number" if annotation is int else "a number"
        if "ge" in bounds and "le" in bounds:
            return f"must be {kind} from {bounds['ge']} to {bounds['le']}"
        limits = [
            f"{op} {bounds[key]}" for key, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")) if key in bounds
        ]
        return f"must be {kind}" + (" " + " and ".join(limits) if limits else "")
    if bounds.get("min_length"):
        return "must not be empty"
    return "must be text"


def shown_value(leaf: Leaf, value: Any) -> str:
    """``value`` as ``config show`` and error messages may print it (secrets masked)."""
    if leaf.secret and value not in (None, ""):
        return MASK
    if leaf.extra("mask") == "url-password" and isinstance(value, str):
        return mask_url_password(value)
    return as_text(value)


def mask_url_password(url: str) -> str:
    """``scheme://user:***@host/db?...&password=***``: a database URL without its passwords."""
    import re

    url = re.sub(r"(://[^/:@]*:)[^@/]*@", rf"\g<1>{MASK}@", url)
    return re.sub(r"([?&](?:password|sslpassword)=)[^&]*", rf"\g<1>{MASK}", url)


def explain(exc: ValidationError, model: type[BaseModel]) -> str:
    """One line for the first error of ``exc``: ``bad setting NAME='value': the rule``."""
    errors = exc.errors()
    first = errors[0]
    more = f" (and {len(errors) - 1} more bad setting(s))" if len(errors) > 1 else ""
    leaf = leaf_at(model, first["loc"])
    cause = (first.get("ctx") or {}).get("error")
    if leaf is None or isinstance(cause, BadSetting):
        text = str(cause) if cause is not None else first["msg"]
        return f"bad setting {text}{more}"
    value = first.get("input")
    shown = shown_value(leaf, value if isinstance(value, str) else as_text(value))
    return f"bad setting {leaf.name}={shown!r}: {rule(leaf.field)}{more}"


# ------------------------------------------------------------------------------- command-line flags


def flag_type(leaf: Leaf) -> Callable[[str], Any]:
    """argparse ``type=`` for a flag that overrides ``leaf``: the field's own type and bounds, so a flag
    is refused for the same reason, in the same words, as its variable."""

    def parse(text: str) -> Any:
        annotation: Any = leaf.field.annotation
        shape: Any = Annotated[annotation, *leaf.field.metadata] if leaf.field.metadata else annotation
        try:
            return TypeAdapter(shape).validate_python(text)
        except ValidationError:
            raise argparse.ArgumentTypeError(f"{text!r}: {rule(leaf.field)}") from None

    parse.__name__ = leaf.name  # argparse names the type in some messages
    return parse


def flag_help(leaf: Leaf) -> str:
    """The help of a flag: its meaning, the variable it overrides and the default (Markdown removed)."""
    import re

    default = leaf.extra("shown_default") or (as_text(leaf.field.default) or "unset")
    meaning = leaf.extra("flag_meaning") or leaf.field.description or ""
    text = f"{meaning} (${leaf.name}; default {default})"
    return re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text).replace("`", "")


def add_setting_flags(parser: argparse.ArgumentParser, command: str, model: type[BaseModel]) -> None:
    """Add to ``parser`` every flag that the settings declare for ``command`` (``variable(flags=...)``).

    Each flag defaults to None ("not given": the variable, else the default, holds) and stores into
    ``setting:<path>``, which :func:`flag_overrides` turns into changes to the settings."""
    prefix = command + " "
    for leaf in leaves(model):
        for spec in leaf.flags:
            if not spec.startswith(prefix):
                continue
            flag = spec[len(prefix) :]
            dest = "setting:" + ".".join(leaf.path)
            if _optional_inner(leaf.field.annotation) is bool:
                parser.add_argument(
                    flag, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=flag_help(leaf)
                )
            else:
                parser.add_argument(
                    flag, dest=dest, type=flag_type(leaf), default=None, metavar=_metavar(leaf), help=flag_help(leaf)
                )


def _metavar(leaf: Leaf) -> str:
    if leaf.extra("metavar"):
        return str(leaf.extra("metavar"))
    annotation = _optional_inner(leaf.field.annotation)
    if get_origin(annotation) is Literal:
        return "{" + ",".join(str(choice) for choice in get_args(annotation)) + "}"
    return {int: "N", float: "SECONDS" if leaf.name.endswith("_S") else "X"}.get(annotation, "TEXT")


def flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings changes the given flags ask for: ``{"worker": {"batch_size": 100}, "group_id": "g"}``."""
    changes: dict[str, Any] = {}
    for dest, value in vars(args).items():
        if not dest.startswith("setting:") or value is None:
            continue
        *outer, last = dest[len("setting:") :].split(".")
        target = changes
        for part in outer:
            target = target.setdefault(part, {})
        target[last] = value
    return changes
