"""Operator actions shared by the REST API and the CLI: manual retries (and the workflows they resume),
queue figures, purges, the workers' heartbeats, cancels (cancel.py, also behind ``AsyncResult.cancel``).

May import: the shared vocabulary at the top of ``cogman``, ``backends``, ``brokers``, ``sending``,
``scheduling`` and ``result``; never ``api`` or ``cli``, which import it.
"""
