"""Turning a call into a recorded, published attempt: the checks and encoding of a send (prepare.py),
the client that records and publishes (client.py), the sweep that republishes records whose publish
was lost (reenqueue.py), and unique sends, decided by the backend before anything is published (unique.py).

May import the shared vocabulary, ``config``, ``middleware``, ``brokers`` and ``backends``; never the
worker, workflows, scheduling or the app.
"""
