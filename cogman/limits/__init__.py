"""Global rate limits and per-key concurrency (docs/control.md): what a task declares (policy.py) and the
store protocol every backend implements (store.py), with the arithmetic the in-process stores share.

May import only the shared vocabulary (``errors``); the backends implement ``LimitStore``, the worker
(cogman/worker/admission.py) asks it before a start.
"""
