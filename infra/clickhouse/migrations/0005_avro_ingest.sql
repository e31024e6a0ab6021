-- Fast ingestion of the high-volume Avro topics: the sink hands ClickHouse the records'
-- raw Confluent Avro bytes (FORMAT AvroConfluent; ClickHouse fetches each writer schema
-- from the registry by id and decodes in C++), into a Null-engine table per topic, and a
-- materialized view maps the decoded fields to the analytics table. Null stores nothing,
-- so a prompt (input_text) is read for its length and never kept. The mapping is the
-- same as processors/sink_tables.py's, which stays the path for every other topic and
-- the fallback for a batch ClickHouse cannot decode (tests/integration/
-- test_sink_avro_ingest.py requires both paths to give identical rows).

CREATE TABLE IF NOT EXISTS ingest_results
(
    request_id String,
    tenant_id String,
    model String,
    model_version String,
    operation String,
    status String,
    error_code Nullable(String),
    input_tokens Int32,
    output_tokens Int32,
    cached_input_tokens Int32,
    request_created_at DateTime64(3, 'UTC'),
    completed_at DateTime64(3, 'UTC'),
    queue_ms Float64,
    inference_ms Float64,
    e2e_ms Float64,
    batch_size Int32,
    device String,
    input_guard Nullable(Tuple(policy_version String, action String, redacted Bool, entity_counts Map(String, Int32), injection_score Float64, injection_rule Nullable(String), reason Nullable(String), checked_at DateTime64(3, 'UTC'))),
    output_guard Nullable(Tuple(policy_version String, action String, redacted Bool, entity_counts Map(String, Int32), injection_score Float64, injection_rule Nullable(String), reason Nullable(String), checked_at DateTime64(3, 'UTC')))
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS ingest_results_mv TO results AS
SELECT
    request_id,
    tenant_id,
    model,
    model_version,
    operation,
    status,
    error_code,
    toUInt32(greatest(s.input_tokens, 0)) AS input_tokens,
    toUInt32(greatest(s.cached_input_tokens, 0)) AS cached_input_tokens,
    toUInt32(greatest(s.output_tokens, 0)) AS output_tokens,
    queue_ms,
    inference_ms,
    e2e_ms,
    toUInt32(greatest(s.batch_size, 0)) AS batch_size,
    device,
    request_created_at,
    completed_at,
    s.input_guard.action AS input_guard_action,
    s.input_guard.reason AS input_guard_reason,
    s.input_guard.policy_version AS input_guard_policy_version,
    s.input_guard.redacted AS input_redacted,
    s.input_guard.injection_score AS injection_score,
    if(isNull(s.input_guard), map(), CAST(assumeNotNull(s.input_guard).entity_counts, 'Map(String, UInt32)')) AS input_pii_entities,
    s.output_guard.action AS output_guard_action,
    s.output_guard.redacted AS output_redacted,
    if(isNull(s.output_guard), map(), CAST(assumeNotNull(s.output_guard).entity_counts, 'Map(String, UInt32)')) AS output_pii_entities
FROM ingest_results AS s;

CREATE TABLE IF NOT EXISTS ingest_requests_received
(
    request_id String,
    tenant_id String,
    model String,
    operation String,
    input_text String,
    max_tokens Nullable(Int32),
    user_id Nullable(String),
    source String,
    created_at DateTime64(3, 'UTC'),
    guard Nullable(Tuple(policy_version String, action String, redacted Bool, entity_counts Map(String, Int32), injection_score Float64, injection_rule Nullable(String), reason Nullable(String), checked_at DateTime64(3, 'UTC')))
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS ingest_requests_received_mv TO requests AS
SELECT
    request_id,
    'received' AS stage,
    tenant_id,
    model,
    operation,
    source,
    user_id,
    created_at,
    toUInt32(lengthUTF8(input_text)) AS input_chars,
    max_tokens,
    s.guard.action AS guard_action,
    s.guard.reason AS guard_reason,
    s.guard.policy_version AS guard_policy_version,
    s.guard.redacted AS guard_redacted,
    s.guard.injection_score AS injection_score,
    if(isNull(s.guard), map(), CAST(assumeNotNull(s.guard).entity_counts, 'Map(String, UInt32)')) AS pii_entities,
    'inference.requests' AS topic
FROM ingest_requests_received AS s;

CREATE TABLE IF NOT EXISTS ingest_requests_safe
(
    request_id String,
    tenant_id String,
    model String,
    operation String,
    input_text String,
    max_tokens Nullable(Int32),
    user_id Nullable(String),
    source String,
    created_at DateTime64(3, 'UTC'),
    guard Nullable(Tuple(policy_version String, action String, redacted Bool, entity_counts Map(String, Int32), injection_score Float64, injection_rule Nullable(String), reason Nullable(String), checked_at DateTime64(3, 'UTC')))
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS ingest_requests_safe_mv TO requests AS
SELECT
    request_id,
    'safe' AS stage,
    tenant_id,
    model,
    operation,
    source,
    user_id,
    created_at,
    toUInt32(lengthUTF8(input_text)) AS input_chars,
    max_tokens,
    s.guard.action AS guard_action,
    s.guard.reason AS guard_reason,
    s.guard.policy_version AS guard_policy_version,
    s.guard.redacted AS guard_redacted,
    s.guard.injection_score AS injection_score,
    if(isNull(s.guard), map(), CAST(assumeNotNull(s.guard).entity_counts, 'Map(String, UInt32)')) AS pii_entities,
    'inference.requests.safe' AS topic
FROM ingest_requests_safe AS s;

CREATE TABLE IF NOT EXISTS ingest_requests_blocked
(
    request_id String,
    tenant_id String,
    model String,
    operation String,
    input_text String,
    max_tokens Nullable(Int32),
    user_id Nullable(String),
    source String,
    created_at DateTime64(3, 'UTC'),
    guard Nullable(Tuple(policy_version String, action String, redacted Bool, entity_counts Map(String, Int32), injection_score Float64, injection_rule Nullable(String), reason Nullable(String), checked_at DateTime64(3, 'UTC')))
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS ingest_requests_blocked_mv TO requests AS
SELECT
    request_id,
    'blocked' AS stage,
    tenant_id,
    model,
    operation,
    source,
    user_id,
    created_at,
    toUInt32(lengthUTF8(input_text)) AS input_chars,
    max_tokens,
    s.guard.action AS guard_action,
    s.guard.reason AS guard_reason,
    s.guard.policy_version AS guard_policy_version,
    s.guard.redacted AS guard_redacted,
    s.guard.injection_score AS injection_score,
    if(isNull(s.guard), map(), CAST(assumeNotNull(s.guard).entity_counts, 'Map(String, UInt32)')) AS pii_entities,
    'inference.requests.blocked' AS topic
FROM ingest_requests_blocked AS s;

CREATE TABLE IF NOT EXISTS ingest_usage
(
    request_id String,
    tenant_id String,
    model String,
    operation String,
    status String,
    error_code Nullable(String),
    input_tokens Int64,
    cached_input_tokens Int64,
    output_tokens Int64,
    total_tokens Int64,
    input_cost Decimal(18, 9),
    cached_input_cost Decimal(18, 9),
    output_cost Decimal(18, 9),
    cost Decimal(18, 9),
    currency String,
    priced Bool,
    price_version String,
    request_created_at DateTime64(3, 'UTC'),
    completed_at DateTime64(3, 'UTC')
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS ingest_usage_mv TO usage AS
SELECT
    request_id,
    tenant_id,
    model,
    operation,
    status,
    error_code,
    toUInt64(s.input_tokens) AS input_tokens,
    toUInt64(s.cached_input_tokens) AS cached_input_tokens,
    toUInt64(s.output_tokens) AS output_tokens,
    toUInt64(s.total_tokens) AS total_tokens,
    input_cost,
    cached_input_cost,
    output_cost,
    cost,
    currency,
    priced,
    price_version,
    request_created_at,
    completed_at
FROM ingest_usage AS s;
