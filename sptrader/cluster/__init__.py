"""Several hosts over NATS JetStream: collectors publish what their feeds hear, writers
store it (``sptrader start --role collector|writer``).

- ``subjects``: stream and subject names, and the message ids JetStream de-duplicates by.
- ``codec``: events to message payloads and back.
- ``link``: the connection (servers and auth from [nats]) and the streams it ensures.
- ``publisher``: the collector's service, local bus -> JetStream, every publish acked.
- ``consumer``: the writer's service, a durable consumer -> the local bus, acked once stored.
- ``hosts``: each host's heartbeat in a key-value bucket, read back for ``status``.
"""
