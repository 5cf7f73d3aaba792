"""The asyncio client: ``send_async``, ``delay_async``, ``send_task_async``, ``get_async``,
``status_async`` and ``aclose`` (docs/async.md). ``bridge.py`` holds the small thread pool an app owns to
run the synchronous sends and reads off the event loop (kombu has no asyncio API); ``waiting.py`` waits
for a task to finish without holding a thread: the Redis wake-up list through ``redis.asyncio``, the
memory backend's own notice, short slices in the pool for the rest.

May import the shared vocabulary and ``backends``; never ``result``, ``task`` or the app at module level
(they import this package to offer their ``*_async`` twins).
"""
