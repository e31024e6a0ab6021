"""Runtime: what runs a processor.

The processor spec, the exactly-once runner and its Kafka-free batch pipeline,
Kafka helpers, dead letters, tracing and span export, Prometheus metrics, and
the in-process harness (``streams.runtime.testing``).

Depends on ``streams.contracts`` only (and the cross-cutting settings and errors).
"""
