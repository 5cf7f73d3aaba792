"""Go-format messages: how a delivery is recognised as Go Cogman's, and how one is built.

Go Cogman publishes the payload bytes as the body, untouched, with exactly three properties: the headers
``TaskName`` and ``TaskID`` (long strings), ``delivery_mode`` 2 and ``message_id`` = the TaskID; no
``content_type`` and no ``content_encoding`` (messages.json of the captured vectors). cogman's own
messages always carry ``content_type`` ``application/json``, so a delivery with both headers and no
``content_type`` is a Go task. The messages themselves are built by ``cogman.sending.go_send``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Go's headers (cogman's messages carry them too: ``cogman.message``, which this package may not import).
HEADER_TASK_NAME = "TaskName"
HEADER_TASK_ID = "TaskID"


def is_go_delivery(headers: Mapping[str, Any], properties: Mapping[str, Any]) -> bool:
    """Both of Go's headers as non-empty strings, and no ``content_type``."""
    task_id, name = headers.get(HEADER_TASK_ID), headers.get(HEADER_TASK_NAME)
    return (
        isinstance(task_id, str)
        and bool(task_id)
        and isinstance(name, str)
        and bool(name)
        and not properties.get("content_type")
    )
