-- Sluice's analytics tables, fed by the sink from the Kafka topics.
--
-- The sink is at-least-once: after a crash or a replay it inserts some rows again.
-- Every table is a ReplacingMergeTree whose ORDER BY ends with the record's natural
-- id, so a replayed row collapses with the first one (at merge time, and at query
-- time with FINAL or argMax). Keys start with the tenant (or topic) and a day, so
-- queries by tenant and time read few granules; partitions are months of event
-- time, which is also what keeps a replayed row in its original partition.
-- No table holds prompt or output text: only ids, counts, verdicts and metrics.

-- inference.requests, .safe and .blocked: one row per request and stage.
CREATE TABLE IF NOT EXISTS requests
(
    request_id String,
    stage LowCardinality(String) COMMENT 'received, safe (passed guard) or blocked',
    tenant_id String,
    model LowCardinality(String),
    operation LowCardinality(String),
    source String,
    user_id Nullable(String),
    created_at DateTime64(3, 'UTC'),
    input_chars UInt32 COMMENT 'length of the prompt; never the prompt itself',
    max_tokens Nullable(Int32),
    guard_action LowCardinality(Nullable(String)),
    guard_reason LowCardinality(Nullable(String)),
    guard_policy_version Nullable(String),
    guard_redacted Nullable(Bool),
    injection_score Nullable(Float64),
    pii_entities Map(String, UInt32),
    topic LowCardinality(String),
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(created_at)
ORDER BY (tenant_id, toDate(created_at), request_id, stage);

-- inference.results: the one outcome of each request, with its latencies and tokens.
CREATE TABLE IF NOT EXISTS results
(
    request_id String,
    tenant_id String,
    model LowCardinality(String),
    model_version String,
    operation LowCardinality(String),
    status LowCardinality(String),
    error_code LowCardinality(Nullable(String)),
    input_tokens UInt32,
    cached_input_tokens UInt32,
    output_tokens UInt32,
    queue_ms Float64,
    inference_ms Float64,
    e2e_ms Float64,
    batch_size UInt32,
    device LowCardinality(String),
    request_created_at DateTime64(3, 'UTC'),
    completed_at DateTime64(3, 'UTC'),
    input_guard_action LowCardinality(Nullable(String)),
    input_guard_reason LowCardinality(Nullable(String)),
    input_guard_policy_version Nullable(String),
    input_redacted Nullable(Bool),
    injection_score Nullable(Float64),
    input_pii_entities Map(String, UInt32),
    output_guard_action LowCardinality(Nullable(String)),
    output_redacted Nullable(Bool),
    output_pii_entities Map(String, UInt32),
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(completed_at)
ORDER BY (tenant_id, toDate(completed_at), request_id);

-- metering.usage: tokens and exact cost of each request (money is Decimal(18, 9) USD).
CREATE TABLE IF NOT EXISTS usage
(
    request_id String,
    tenant_id String,
    model LowCardinality(String),
    operation LowCardinality(String),
    status LowCardinality(String),
    error_code LowCardinality(Nullable(String)),
    input_tokens UInt64,
    cached_input_tokens UInt64,
    output_tokens UInt64,
    total_tokens UInt64,
    input_cost Decimal(18, 9),
    cached_input_cost Decimal(18, 9),
    output_cost Decimal(18, 9),
    cost Decimal(18, 9),
    currency LowCardinality(String),
    priced Bool,
    price_version LowCardinality(String),
    request_created_at DateTime64(3, 'UTC'),
    completed_at DateTime64(3, 'UTC'),
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(completed_at)
ORDER BY (tenant_id, toDate(completed_at), request_id);

-- metering.windows: running totals per tenant, model and window; the highest version wins.
CREATE TABLE IF NOT EXISTS usage_windows
(
    tenant_id String,
    model LowCardinality(String),
    window LowCardinality(String) COMMENT '1m or 1h',
    window_start DateTime64(3, 'UTC'),
    window_end DateTime64(3, 'UTC'),
    requests UInt64,
    errors UInt64,
    input_tokens UInt64,
    cached_input_tokens UInt64,
    output_tokens UInt64,
    cost Decimal(18, 9),
    version UInt64,
    updated_at DateTime64(3, 'UTC'),
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(window_start)
ORDER BY (tenant_id, window, window_start, model);

-- metering.budgets: spend per tenant and period against its budget; the highest version wins.
CREATE TABLE IF NOT EXISTS budget_status
(
    tenant_id String,
    period LowCardinality(String) COMMENT 'day or month',
    period_start DateTime64(3, 'UTC'),
    period_end DateTime64(3, 'UTC'),
    hard Bool,
    tokens UInt64,
    cost Decimal(18, 9),
    token_limit Nullable(UInt64),
    cost_limit Nullable(Decimal(18, 9)),
    requests UInt64,
    version UInt64,
    updated_at DateTime64(3, 'UTC'),
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(period_start)
ORDER BY (tenant_id, period, period_start);

-- metering.alerts: one row per tenant, period, metric and threshold (alert_id).
CREATE TABLE IF NOT EXISTS budget_alerts
(
    alert_id String,
    tenant_id String,
    period LowCardinality(String),
    period_start DateTime64(3, 'UTC'),
    metric LowCardinality(String),
    threshold_pct UInt8,
    used Decimal(18, 9),
    budget_limit Decimal(18, 9),
    hard Bool,
    request_id String,
    raised_at DateTime64(3, 'UTC'),
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(period_start)
ORDER BY (tenant_id, alert_id);

-- pii.findings: what guard found, where and how sure (never the value).
CREATE TABLE IF NOT EXISTS pii_findings
(
    request_id String,
    tenant_id String,
    field LowCardinality(String),
    entity_type LowCardinality(String),
    start UInt32,
    end UInt32,
    score Float64,
    recognizer LowCardinality(String),
    action LowCardinality(String),
    policy_version LowCardinality(String),
    ts DateTime64(3, 'UTC'),
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (tenant_id, toDate(ts), request_id, field, start, entity_type);

-- Every <topic>.dlq: why a record was dead-lettered, from its sluice.error.* headers.
-- The payload is not stored (it may hold personal data); `sluice dlq show` reads it.
CREATE TABLE IF NOT EXISTS dead_letters
(
    dlq_topic LowCardinality(String),
    dlq_partition UInt32,
    dlq_offset UInt64,
    topic LowCardinality(String) COMMENT 'the topic the record was read from',
    partition UInt32,
    offset UInt64,
    processor LowCardinality(String),
    stage LowCardinality(String),
    error_class LowCardinality(String),
    reason String,
    details Map(String, String),
    ts DateTime64(3, 'UTC'),
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (dlq_topic, toDate(ts), dlq_partition, dlq_offset);

-- drift.alerts (written by the drift processor, schemas/avro/drift_alert.avsc): one row
-- per alert. alert_id is stable across restarts, so a replay collapses.
CREATE TABLE IF NOT EXISTS drift_alerts
(
    alert_id String,
    ts DateTime64(3, 'UTC') COMMENT 'detected_at: when drift raised the alert',
    signal String COMMENT '<subject_kind>:<subject>:<signal_name>',
    subject_kind LowCardinality(String) COMMENT 'dataset or model',
    subject LowCardinality(String),
    signal_name LowCardinality(String),
    signal_kind LowCardinality(String) COMMENT 'numeric, categorical or rate',
    stream LowCardinality(String) COMMENT 'location, spread, novelty, rate or window',
    detector LowCardinality(String) COMMENT 'adwin, page_hinkley, ks or chi_square',
    statistic Float64,
    threshold Float64,
    p_value Nullable(Float64),
    effect Nullable(Float64),
    severity LowCardinality(String) COMMENT 'warning or critical',
    window_size UInt64,
    window_start_ts DateTime64(3, 'UTC'),
    window_end_ts DateTime64(3, 'UTC'),
    window_end_offset Int64,
    reference_mean Nullable(Float64),
    current_mean Nullable(Float64),
    reference_summary String COMMENT 'JSON: count, mean, std, p50, top categories',
    current_summary String COMMENT 'JSON: count, mean, std, p50, top categories',
    reference_source LowCardinality(String) COMMENT 'profile:<id> or warmup',
    values_seen UInt64,
    suppressed UInt32,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (subject_kind, subject, toDate(ts), signal, alert_id);
