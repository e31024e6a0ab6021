"""Clients for applications: the producer SDK and the Kafka Connect REST client."""
