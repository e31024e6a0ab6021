"""Warehouse: ClickHouse (embedded chdb or a server), its migrations, the report.

Also how each topic maps onto a table (``tables``), which the sink and the CLI share.
"""
