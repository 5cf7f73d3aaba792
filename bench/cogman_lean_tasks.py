"""cogman's lean profile (``Config.profile="lean"``, docs/guarantees.md#the-lean-profile): the worker's app
(``cogman -A bench.cogman_lean_tasks:app worker``); its senders use ``make_app(profile="lean")`` too."""

from __future__ import annotations

from bench.cogman_tasks import make_app

app = make_app(profile="lean")
