"""What the ``redis+sentinel://`` and ``redis+cluster://`` URL parsers share: a list of ``host:port``
parts, and the URL as an error message may show it (never with its password)."""

from __future__ import annotations

from cogman.errors import ConfigError


def host_port(part: str, shown: str, default_port: int, what: str) -> tuple[str, int]:
    """``host[:port]`` of one comma-separated ``part`` (``default_port`` when it names none); ConfigError
    naming the URL (``shown``) and ``what`` the part should be (``a sentinel``, ``a node``)."""
    host, colon, port = part.strip().rpartition(":")
    if not colon:
        host, port = part.strip(), str(default_port)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{shown!r}: {part!r} is not {what}'s host:port")
    return host, int(port)


def without_password(url: str) -> str:
    """``url`` with its password replaced by ``***`` and its options by ``?...`` (they may hold one)."""
    scheme, sep, rest = url.partition("://")
    netloc, slash, tail = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.split(':', 1)[0]}:***@{hosts}"
    tail = tail.split("?", 1)[0] + ("?..." if "?" in tail else "")
    return f"{scheme}{sep}{netloc}{slash}{tail}"
