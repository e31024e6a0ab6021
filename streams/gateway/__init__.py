"""The OpenAI-compatible gateway: HTTP in front of Sluice's Kafka pipeline.

Clients speak OpenAI's API (``/v1/embeddings``, ``/v1/chat/completions``,
``/v1/completions``, ``/v1/models``) with an API key; the gateway maps each call to
``InferenceRequest`` records for the key's tenant and waits for their outcome.
See docs/explanation/gateway.md for the design.
"""
