"""Go Cogman's wire format (issue 22, docs/go-interop.md): what a mixed fleet of Go Cogman and cogman
processes shares on RabbitMQ and in Redis.

``record.py`` is Go's task record (the JSON under the bare TaskID, byte for byte as Go writes it, and
Go's status ranks mapped onto :mod:`cogman.status`), ``wire.py`` recognises Go-format deliveries (raw
body, ``TaskName``/``TaskID`` headers, no ``content_type``; ``cogman.sending.go_send`` builds them), and
``store.py`` is the small protocol every backend implements for Go records (``Backend.go_records()``;
the in-process one is ``cogman/backends/memory/go_records.py``).

May import only the shared vocabulary below ``message`` (``errors``, ``status``, ``priority``, ``record``):
the backends import it, and ``message`` leads up to them.
"""
