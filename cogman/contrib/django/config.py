"""The cogman settings of a Django project: every ``cogman.Config`` field as ``COGMAN_<FIELD>`` in
``settings.py`` (``COGMAN_BROKER_URL``, ``COGMAN_BACKEND_URL``, ``COGMAN_CONCURRENCY``...), the names of
the environment variables (cogman/config/environment.py), with Python values.

A string where another type is expected is parsed as the environment variable would be
(``COGMAN_CONCURRENCY = os.environ.get("WORKERS", "8")`` works); any other value of the wrong type, and a
``COGMAN_`` setting that names no field, is a ConfigError naming the setting.
"""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import fields
from typing import Any, get_args, get_origin, get_type_hints

from cogman.config.environment import PREFIX, parse, variable
from cogman.config.settings import Config
from cogman.errors import ConfigError


def options_from_settings(settings: Any) -> dict[str, Any]:
    """Config options from the ``COGMAN_*`` attributes of ``settings`` (``django.conf.settings``)."""
    hints = get_type_hints(Config)
    by_setting = {variable(item.name): item.name for item in fields(Config)}
    options: dict[str, Any] = {}
    for name in dir(settings):
        if not name.startswith(PREFIX):
            continue
        field = by_setting.get(name)
        if field is None:
            close = difflib.get_close_matches(name.removeprefix(PREFIX).lower(), list(by_setting.values()), n=1)
            hint = f"; did you mean {variable(close[0])}?" if close else f"; known: {', '.join(sorted(by_setting))}"
            raise ConfigError(f"Django setting {name} is not a cogman setting{hint}")
        options[field] = _value(name, getattr(settings, name), hints[field])
    return options


def _value(name: str, value: Any, kind: Any) -> Any:
    choices = get_args(kind) if get_origin(kind) in (typing.Union, types.UnionType) else (kind,)
    if any(_fits(value, choice) for choice in choices):
        return list(value) if isinstance(value, tuple) else value
    if isinstance(value, str):
        return parse(name, value, kind)
    expected = " or ".join(_describe(choice) for choice in choices)
    raise ConfigError(f"Django setting {name} = {value!r} is not {expected}")


def _fits(value: Any, kind: Any) -> bool:
    if kind is type(None):
        return value is None
    if get_origin(kind) is typing.Literal:
        return value in get_args(kind)
    if get_origin(kind) is list:
        return isinstance(value, list | tuple) and all(isinstance(item, str) for item in value)
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(kind, type) and isinstance(value, kind)


def _describe(kind: Any) -> str:
    if kind is type(None):
        return "None"
    if get_origin(kind) is typing.Literal:
        return "one of " + ", ".join(repr(arg) for arg in get_args(kind))
    if get_origin(kind) is list:
        return "a list of strings"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(kind, str(kind))
