-- TTLs from the data classes of schemas/topics.yaml (streams/warehouse/retention.py):
-- each table keeps rows for its class's clickhouse_ttl_days, counted from its
-- event-time column. MODIFY TTL is idempotent; on a table that already holds rows
-- ClickHouse applies the TTL to them in a background mutation. A later change of a
-- class's TTL goes in a new migration (tests/unit/warehouse/test_retention.py says so).
-- budget_alerts: metrics
ALTER TABLE budget_alerts MODIFY TTL toDateTime(period_start) + INTERVAL 400 DAY;
-- budget_status: state
ALTER TABLE budget_status MODIFY TTL toDateTime(period_start) + INTERVAL 400 DAY;
-- dead_letters: dead_letter
ALTER TABLE dead_letters MODIFY TTL toDateTime(ts) + INTERVAL 30 DAY;
-- drift_alerts: metrics
ALTER TABLE drift_alerts MODIFY TTL toDateTime(ts) + INTERVAL 400 DAY;
-- drift_profiles: state
ALTER TABLE drift_profiles MODIFY TTL toDateTime(created_at) + INTERVAL 400 DAY;
-- otel_traces: telemetry
ALTER TABLE otel_traces MODIFY TTL toDateTime(Timestamp) + INTERVAL 30 DAY;
-- pii_findings: audit
ALTER TABLE pii_findings MODIFY TTL toDateTime(ts) + INTERVAL 365 DAY;
-- requests: request_metadata
ALTER TABLE requests MODIFY TTL toDateTime(created_at) + INTERVAL 90 DAY;
-- results: request_metadata
ALTER TABLE results MODIFY TTL toDateTime(completed_at) + INTERVAL 90 DAY;
-- usage: metrics
ALTER TABLE usage MODIFY TTL toDateTime(completed_at) + INTERVAL 400 DAY;
-- usage_windows: metrics
ALTER TABLE usage_windows MODIFY TTL toDateTime(window_start) + INTERVAL 400 DAY;
