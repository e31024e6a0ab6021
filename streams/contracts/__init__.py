"""Contracts: what each topic carries and the rules its records obey.

The topic catalog, Avro schemas and the Confluent wire format, data contracts
and their rules, typed records, money, and the Schema Registry.

The lowest layer above ``streams.settings`` and ``streams.errors``: it knows what
a topic carries, never how records move.
"""
