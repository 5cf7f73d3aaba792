"""Every :class:`~cogman.config.Config` field from the environment, as ``COGMAN_<FIELD>``.

Twelve-factor deployments (containers, Kubernetes) configure through the environment, so each field can
be set there, typed: ``COGMAN_CONCURRENCY=16``, ``COGMAN_REQUEST_TIMEOUT=2.5``, ``COGMAN_EAGER=1``,
``COGMAN_BACKEND_URL=redis://a:6379/0,mongodb://b:27017`` (a comma makes a list, except inside a URL's
host list: ``mongodb://h1,h2/`` stays one URL). What ``App(...)`` is given explicitly wins over the
environment. A value that does not parse is an error naming the variable, never a silent default.
"""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Mapping
from dataclasses import fields
from typing import Any, get_args, get_origin, get_type_hints

from cogman.errors import ConfigError

PREFIX = "COGMAN_"
TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off"}
NONE = {"", "none", "null"}


def variable(name: str) -> str:
    """The environment variable of a Config field."""
    return PREFIX + name.upper()


def options_from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Config options found in the environment, parsed to their field's type."""
    from cogman.config.settings import Config

    env = os.environ if environ is None else environ
    hints = get_type_hints(Config)
    options: dict[str, Any] = {}
    for item in fields(Config):
        name = variable(item.name)
        if name in env:
            options[item.name] = parse(name, env[name], hints[item.name])
    return options


def parse(name: str, raw: str, kind: Any) -> Any:
    """``raw`` as a value of the type ``kind`` (int, float, bool, str, a Literal, lists, ``X | None``).
    A field that may be a list (``str | list[str]``) reads text with a comma as a list."""
    text = raw.strip()
    choices = [arg for arg in _union(kind) if arg is not type(None)]
    if type(None) in _union(kind) and text.lower() in NONE:
        return None
    lists = [c for c in choices if get_origin(c) is list]
    if lists and "," in text:
        items = _split_list(text)
        return items[0] if len(items) == 1 and str in choices else items
    for choice in choices:
        if get_origin(choice) is list:
            continue
        try:
            return _one(text, choice)
        except ValueError:
            continue
    if lists:
        return _one(text, lists[0])
    expected = " or ".join(_describe(c) for c in choices)
    raise ConfigError(f"{name}={raw!r} is not {expected}")


def _union(kind: Any) -> tuple[Any, ...]:
    if get_origin(kind) in (typing.Union, types.UnionType):
        return get_args(kind)
    return (kind,)


def _one(text: str, kind: Any) -> Any:
    if get_origin(kind) is typing.Literal:
        if text in get_args(kind):
            return text
        raise ValueError(text)
    if get_origin(kind) is list:
        return _split_list(text)
    if kind is bool:
        lowered = text.lower()
        if lowered in TRUE or lowered in FALSE:
            return lowered in TRUE
        raise ValueError(text)
    if kind is int:
        return int(text)
    if kind is float:
        return float(text)
    if kind is str:
        return text
    raise ValueError(f"unsupported field type {kind}")


def _split_list(text: str) -> list[str]:
    """Comma-separated items; in a list of URLs, a part that is not a URL continues the one before it,
    so ``mongodb://h1:27017,h2:27017/?replicaSet=rs`` (a host list) stays one URL."""
    items: list[str] = []
    for part in (part.strip() for part in text.split(",")):
        if not part:
            continue
        if items and "://" in items[-1] and "://" not in part:
            items[-1] += "," + part
        else:
            items.append(part)
    return items


def _describe(kind: Any) -> str:
    if get_origin(kind) is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(kind))
    if get_origin(kind) is list:
        return "a comma-separated list"
    return {bool: "a boolean (1/0, true/false, yes/no, on/off)", int: "an integer", float: "a number"}.get(
        kind, "a string"
    )


def markdown_table() -> str:
    """The table of docs/configuration.md: every field, its variable, type, default and meaning (from
    the ``#:`` comments in cogman/config/settings.py). ``python -m cogman.environment`` prints it."""
    import inspect
    import re

    from cogman.config.settings import Config

    comments: dict[str, str] = {}
    pending: list[str] = []
    for line in inspect.getsource(Config).splitlines():
        stripped = line.strip()
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
            continue
        match = re.match(r"(\w+):", stripped)
        if match and pending:
            comments[match.group(1)] = " ".join(pending)
        if not stripped.startswith("#"):
            pending = []
    hints = get_type_hints(Config)
    defaults = Config(broker_url="memory://", backend_url="memory://")
    rows = ["| field | variable | type | default | meaning |", "|---|---|---|---|---|"]
    for item in fields(Config):
        hint = hints[item.name]
        kind = hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "").replace("NoneType", "None")
        kind = kind.replace("|", "\\|")
        default = getattr(defaults, item.name)
        meaning = comments.get(item.name, "").replace("|", "\\|")
        rows.append(f"| `{item.name}` | `{variable(item.name)}` | {kind} | `{default!r}` | {meaning} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
