"""chain, group and chord: Celery's workflow names, sent from any process and run by any workers.

Sending a workflow sends only what can start now (a chain's first step, a group's or chord's members),
each message carrying what follows it (cogman/signature.py); workers send the rest as steps end
(cogman/workflows/steps.py). Every argument is checked here, before anything is recorded: the first step as
given, later chain steps and the chord's callback with a result in front of their own arguments.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from cogman.delays import plan
from cogman.sending.ids import new_task_id
from cogman.sending.prepare import SendOptions
from cogman.signature import Chained, ChainStep, ChordMember, SendingApp, Signature, callback_id, chain_ids
from cogman.workflows.results import ChainResult, ChordResult, GroupResult

if TYPE_CHECKING:
    from cogman.result import AsyncResult


class chain:  # lower case: Celery's name
    """``chain(add.s(1, 2), add.s(10), mul.s(3))`` or ``add.s(1, 2) | add.s(10) | mul.s(3)``: each step
    gets the previous step's result as its first argument; ``.delay().get()`` is the last result."""

    def __init__(self, *steps: Signature | chain | Chained | Iterable[Signature]) -> None:
        self.steps: list[Signature] = []
        for step in steps:
            if isinstance(step, chain):
                self.steps += step.steps
            elif isinstance(step, Signature):
                self.steps.append(step)
            elif isinstance(step, group | chord) or not isinstance(step, Iterable):
                raise TypeError(f"chain steps are signatures (task.s(...)), got {type(step).__name__}")
            else:
                self.steps += [_signature(s, "chain step") for s in step]

    def __or__(self, other: Signature | chain) -> chain:
        return chain(self, other)

    def __repr__(self) -> str:
        return " | ".join(f"{s.name}{s.args}" for s in self.steps)

    def delay(self) -> ChainResult:
        return self.apply_async()

    def apply_async(self, *, app: SendingApp | None = None, task_id: str | None = None) -> ChainResult:
        """Send the first step; ``task_id`` chooses its id (the later ids derive from it)."""
        if not self.steps:
            raise ValueError("an empty chain has nothing to run")
        sender = _app_of(self.steps, app)
        total = len(self.steps)
        for position, step in enumerate(self.steps, 1):
            where = f"chain step {position} of {total} ({step.name})"
            _check_options(sender, step, where)
            step.check_fits(0 if position == 1 else 1, where)
        ids = chain_ids(task_id or new_task_id(), total)
        first, rest = self.steps[0], tuple(self.steps[1:])
        extra = {"workflow": ChainStep(1, total, rest).to_dict()} if rest else None
        with sender.middleware.sending(first.name, workflow="chain"):
            _send(sender, [first], [ids[0]], [extra])
        return ChainResult(sender, ids, [step.name for step in self.steps])


class group:  # lower case: Celery's name
    """``group(add.s(i, i) for i in range(100))``: the members run in parallel; ``.delay().get()`` is the
    list of their results, in member order."""

    def __init__(self, *members: Signature | Iterable[Signature]) -> None:
        self.members: list[Signature] = []
        for member in members:
            if isinstance(member, Signature):
                self.members.append(member)
            elif isinstance(member, group | chain | chord) or not isinstance(member, Iterable):
                raise TypeError(f"group members are signatures (task.s(...)), got {type(member).__name__}")
            else:
                self.members += [_signature(m, "group member") for m in member]

    def __len__(self) -> int:
        return len(self.members)

    def delay(self) -> GroupResult:
        return self.apply_async()

    def apply_async(self, *, app: SendingApp | None = None) -> GroupResult:
        sender = _app_of(self.members, app)
        self._check(sender)
        ids = [new_task_id() for _ in self.members]
        with sender.middleware.sending(self.members[0].name if self.members else "", workflow="group"):
            results = _send(sender, self.members, ids, None)
        return GroupResult(sender, results, [m.name for m in self.members])

    def _check(self, sender: SendingApp) -> None:
        for index, member in enumerate(self.members, 1):
            where = f"group member {index} of {len(self.members)} ({member.name})"
            _check_options(sender, member, where)
            member.check_fits(0, where)


class chord:  # lower case: Celery's name
    """``chord(group(...), tsum.s())``: the callback runs once, after every member finished, with the
    list of their results (in member order) in front of its own arguments. A failed member fails the
    chord, unless ``partial=True``: the callback then runs with None in the failed members' places."""

    def __init__(self, header: group | Iterable[Signature], body: Signature, *, partial: bool = False) -> None:
        self.header = header if isinstance(header, group) else group(header)
        if not isinstance(body, Signature):
            raise TypeError(f"a chord's callback is a signature (task.s(...)), got {type(body).__name__}")
        self.body = body
        self.partial = partial

    def delay(self) -> ChordResult:
        return self.apply_async()

    def apply_async(self, *, app: SendingApp | None = None, task_id: str | None = None) -> ChordResult:
        """Send the members; ``task_id`` chooses the chord's id (the callback's id derives from it)."""
        members = self.header.members
        sender = _app_of([*members, self.body], app)
        self.header._check(sender)
        _check_options(sender, self.body, f"chord callback ({self.body.name})")
        self.body.check_fits(1, f"chord callback ({self.body.name})")
        chord_id = task_id or new_task_id()
        final_id = callback_id(chord_id)
        names = [m.name for m in members]
        if not members:  # nothing to wait for: the callback runs now, on an empty list
            empty = Signature(self.body.name, ([], *self.body.args), self.body.kwargs, self.body.options, sender)
            with sender.middleware.sending(empty.name, workflow="chord"):
                _send(sender, [empty], [final_id], None)
            return ChordResult(sender, final_id, self.body.name, GroupResult(sender, [], []))
        size = len(members)
        extras = [{"workflow": ChordMember(chord_id, i, size, self.body, self.partial).to_dict()} for i in range(size)]
        with sender.middleware.sending(members[0].name, workflow="chord"):
            results = _send(sender, members, [new_task_id() for _ in members], extras)
        return ChordResult(sender, final_id, self.body.name, GroupResult(sender, results, names))


def _signature(item: Any, what: str) -> Signature:
    if not isinstance(item, Signature):
        raise TypeError(f"a {what} is a signature (task.s(...)), got {type(item).__name__}")
    return item


def _app_of(signatures: Iterable[Signature], app: SendingApp | None) -> SendingApp:
    if app is not None:
        return app
    for signature in signatures:
        if signature.app is not None:
            return signature.app
    raise ValueError("no app to send with: build the signatures with task.s(...) or pass app=")


def _check_options(app: SendingApp, step: Signature, where: str) -> None:
    """Workers send later steps with their options: refuse now what they could not send then."""
    try:
        options = SendOptions(**step.send_options())
        plan(countdown=options.countdown, eta=options.eta, expires=options.expires)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{where}: {exc}") from None


def _send(
    app: SendingApp, steps: list[Signature], ids: list[str], extras: Sequence[dict[str, Any] | None] | None
) -> list[AsyncResult[Any]]:
    """Send in order, one ``send_many`` per run of consecutive steps with the same task and options."""
    results: list[AsyncResult[Any]] = []
    runs = itertools.groupby(range(len(steps)), key=lambda i: (steps[i].name, json.dumps(steps[i].options)))
    for (name, _), run in runs:
        indexes = list(run)
        results += app.send_many(
            name,
            [(steps[i].args, steps[i].kwargs) for i in indexes],
            task_ids=[ids[i] for i in indexes],
            extras=None if extras is None else [extras[i] for i in indexes],
            **steps[indexes[0]].send_options(),
        )
    return results
