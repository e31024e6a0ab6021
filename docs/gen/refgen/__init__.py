"""Generators of the documentation's reference pages, read from Sluice's code at build time.

Each module turns one part of the code (the CLI, the settings classes, the
topic catalog, the Avro schemas, the dead-letter kinds, the Prometheus
metrics, the ClickHouse migrations) into rows, then into Markdown. The
functions that make rows are pure and unit-tested
(``tests/unit/docs/test_reference.py``); ``docs/gen/reference.py`` writes the
pages during ``mkdocs build``.
"""
