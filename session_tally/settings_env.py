"""Reading a settings model from the environment, with pydantic-settings (imported only here, when a
command reads its settings: the import costs a few tenths of a second that `replay` never pays).

Invariant: ``read(Model)`` validates exactly what ``Model(**given)`` would, with each variable of the
environment standing in for the field it is the alias of (an empty variable is unset); the environment
never fills a field that ``given`` sets.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
from collections.abc import Iterator, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from session_tally.settings_fields import pick

M = TypeVar("M", bound=BaseModel)
_ENVIRON: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar("environ", default=None)


@contextlib.contextmanager
def _reading(environ: Mapping[str, str] | None) -> Iterator[None]:
    token = _ENVIRON.set(environ)
    try:
        yield
    finally:
        _ENVIRON.reset(token)


class EnvironmentByName(PydanticBaseSettingsSource):
    """pydantic-settings' source for session-tally: each variable by its own name, nested models included.

    (pydantic-settings' own environment source reads a nested model's fields only as
    ``PARENT__FIELD``, which would rename every variable the project has always had.)"""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads every field at once

    def __call__(self) -> dict[str, Any]:
        given = _ENVIRON.get()
        return pick(self.settings_cls, os.environ if given is None else given)


@functools.cache
def _reader(model: type[BaseModel]) -> type[BaseSettings]:
    """``model`` as pydantic-settings' BaseSettings: the same fields, read from the constructor's
    arguments first, then from the environment."""

    class Reader(BaseSettings, model):  # type: ignore[misc,valid-type]
        model_config = SettingsConfigDict(**{**model.model_config, "defer_build": False})  # type: ignore[typeddict-item]

        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, EnvironmentByName(settings_cls))

    Reader.__name__ = Reader.__qualname__ = model.__name__  # pydantic's error titles name the model
    return Reader


def read(model: type[M], environ: Mapping[str, str] | None = None, **given: Any) -> M:
    """``model`` from ``given`` and the environment (``os.environ`` unless ``environ``); raises pydantic's
    ValidationError (config.py turns it into one line)."""
    with _reading(environ):
        values = _reader(model)(**given)
    return model.model_validate(dict(values))
