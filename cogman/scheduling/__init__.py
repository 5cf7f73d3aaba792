"""Tasks sent by time: periodic schedules (periodic.py), the beat that sends their ticks (beat.py), and
claims (claims.py): sending what only one process of the fleet may send, a tick or a chord's callback.

May import the shared vocabulary, ``backends``, ``brokers`` and ``sending``; it sees the app through the
small protocols it declares, never ``cogman.app``.
"""
