-- audit.events: what operators did through the sluice command line (schemas apply, dlq
-- replay, connect apply/delete, drift reset), by whom, from where, and how it ended.
-- Append-only like its topic: MergeTree, no row ever replaces another. The sink is
-- at-least-once, so a replayed event can appear twice; queries that count events collapse
-- them on event_id (count(DISTINCT event_id), or LIMIT 1 BY event_id).
-- The TTL is that of the audit data class (schemas/topics.yaml).
CREATE TABLE IF NOT EXISTS audit_events
(
    event_id String,
    occurred_at DateTime64(3, 'UTC'),
    actor String COMMENT 'os user, and /sasl user when Kafka SASL is configured',
    host String,
    action LowCardinality(String) COMMENT 'schemas.apply, dlq.replay, connect.apply, ...',
    target String COMMENT 'topic, connector, signal prefix, or cluster the action changed',
    outcome LowCardinality(String) COMMENT 'ok or failed',
    details Map(String, String) COMMENT 'counts and names, error_class; never payloads',
    sluice_version LowCardinality(String),
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (occurred_at, action, event_id)
TTL toDateTime(occurred_at) + INTERVAL 365 DAY;
