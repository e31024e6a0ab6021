"""Sluice's core: settings, contracts, Avro serdes, the processor runner, the SDK and the CLI."""

__version__ = "0.1.0"
