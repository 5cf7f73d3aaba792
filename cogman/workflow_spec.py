"""What a workflow step's message says about the workflow around it, and the ids workflows derive.

A chain step carries the steps after it (:class:`ChainStep`); a chord member carries the chord's id, its
own index, the chord's size and the callback (:class:`ChordMember`). The spec rides in the message body
under ``workflow`` and in the record's payload (so re-enqueue republishes it intact). A malformed spec is
a poison message: :func:`parse` raises ValueError saying what is wrong.

Ids are derived, never drawn: the next step of a chain from the finishing step's id, a chord's callback
from the chord's id (uuid5, as :func:`cogman.client.retry_task_id` derives retries). So a redelivered
step sends the same next step again, which the backend's insert-if-absent create records once, and a
result handle knows every id of its workflow from the moment it is sent.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from cogman.signature import Signature

WORKFLOW_NAMESPACE = uuid.UUID("3d0f5c8e-2b7a-4e51-9c64-8a1f0e7b2d93")
#: How the fail_error of a step that never ran because of another one begins.
NOT_RUN = "not run: "


def next_step_id(step_id: str) -> str:
    """The id of the chain step after the step whose first attempt has ``step_id``."""
    return str(uuid.uuid5(WORKFLOW_NAMESPACE, f"next:{step_id}"))


def chain_ids(first_id: str, total: int) -> list[str]:
    ids = [first_id]
    while len(ids) < total:
        ids.append(next_step_id(ids[-1]))
    return ids


def callback_id(chord_id: str) -> str:
    """The id of a chord's callback: every member that completes the chord derives the same one."""
    return str(uuid.uuid5(WORKFLOW_NAMESPACE, f"callback:{chord_id}"))


@dataclass(frozen=True, slots=True)
class ChainStep:
    """This message is step ``position`` (1-based) of a chain of ``total``; ``rest`` follow it."""

    position: int
    total: int
    rest: tuple[Signature, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"chain": {"position": self.position, "total": self.total, "rest": [s.to_dict() for s in self.rest]}}


@dataclass(frozen=True, slots=True)
class ChordMember:
    """This message is member ``index`` (0-based) of chord ``chord_id`` of ``size`` members."""

    chord_id: str
    index: int
    size: int
    callback: Signature
    #: The callback runs even if members failed, with None in their places.
    partial: bool = False

    def to_dict(self) -> dict[str, Any]:
        chord = {"id": self.chord_id, "index": self.index, "size": self.size, "callback": self.callback.to_dict(),
                 "partial": self.partial}  # fmt: skip
        return {"chord": chord}


WorkflowSpec = ChainStep | ChordMember


def parse(data: Any) -> WorkflowSpec | None:
    """The spec of a message body or a record payload (None when absent); ValueError when malformed."""
    if data is None:
        return None
    if not isinstance(data, dict) or len(data) != 1:
        raise ValueError("workflow must be an object with one key, 'chain' or 'chord'")
    kind, body = next(iter(data.items()))
    if not isinstance(body, dict):
        raise ValueError(f"workflow {kind!r} must be an object")
    if kind == "chain":
        position, total, rest = _int(body, "position", 1), _int(body, "total", 2), body.get("rest")
        if not isinstance(rest, list) or not rest or position + len(rest) != total:
            raise ValueError(f"workflow chain: 'rest' must list the {total - position} step(s) after step {position}")
        return ChainStep(position, total, tuple(Signature.from_dict(step) for step in rest))
    if kind == "chord":
        chord_id, size, partial = body.get("id"), _int(body, "size", 1), body.get("partial", False)
        index = _int(body, "index", 0)
        if not isinstance(chord_id, str) or not chord_id or index >= size or not isinstance(partial, bool):
            raise ValueError("workflow chord: needs a string 'id', 'index' below 'size' and a boolean 'partial'")
        return ChordMember(chord_id, index, size, Signature.from_dict(body.get("callback")), partial)
    raise ValueError(f"unknown workflow kind {kind!r}; expected 'chain' or 'chord'")


def _int(body: dict[str, Any], name: str, least: int) -> int:
    value = body.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise ValueError(f"workflow field {name!r} must be an integer of at least {least}, got {value!r}")
    return value
