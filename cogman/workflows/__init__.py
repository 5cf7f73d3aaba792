"""chain, group and chord: building and sending them (canvas.py), what a worker sends when a step ends
(steps.py), their result handles (results.py), and cancelling them (cancel.py). The workflow as data,
carried in messages, is ``cogman.signature``.

May import the shared vocabulary, ``sending``, ``scheduling`` (claims) and ``backends``/``brokers``
protocols; never the worker or the app.
"""
