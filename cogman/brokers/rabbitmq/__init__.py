"""The RabbitMQ broker: the front (broker.py) over the topology and delay ladder, connections with
failover, the publisher (outbox, confirms, the flusher thread) and the consumer (one I/O thread each,
deliveries read raw, confirmed dead letters).

May import ``cogman.brokers.base`` and the shared vocabulary only; nothing outside ``brokers`` imports it
but ``brokers.create_broker``.
"""
