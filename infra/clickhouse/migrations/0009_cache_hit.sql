-- infer's response cache: a result answered from it, and the usage metered for it, say so
-- (cache_hit, appended last to InferenceResult and UsageEvent with default false). Rows
-- stored before this migration read false. The Null ingest tables get the column too,
-- and their views are made again to carry it; a record written before the field existed
-- decodes with its default (the sink sets input_format_avro_allow_missing_fields).

ALTER TABLE results ADD COLUMN IF NOT EXISTS cache_hit Bool DEFAULT false AFTER output_pii_entities;

ALTER TABLE usage ADD COLUMN IF NOT EXISTS cache_hit Bool DEFAULT false AFTER completed_at;

ALTER TABLE ingest_results ADD COLUMN IF NOT EXISTS cache_hit Bool DEFAULT false;

ALTER TABLE ingest_usage ADD COLUMN IF NOT EXISTS cache_hit Bool DEFAULT false;

DROP VIEW IF EXISTS ingest_results_mv;

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
    if(isNull(s.output_guard), map(), CAST(assumeNotNull(s.output_guard).entity_counts, 'Map(String, UInt32)')) AS output_pii_entities,
    cache_hit
FROM ingest_results AS s;

DROP VIEW IF EXISTS ingest_usage_mv;

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
    completed_at,
    cache_hit
FROM ingest_usage AS s;
