-- Materialized views for the two questions asked every day: cost per tenant per day,
-- and latency quantiles per model per minute.
--
-- Why refreshable views: an incremental view (triggered on insert) sees each inserted
-- block, so a replayed row would be added twice to a SummingMergeTree and no
-- aggregate state can subtract it. These views are recomputed from the deduplicated
-- tables (FINAL) and swapped in atomically every minute: each request counts once,
-- whatever the sink replayed, and quantiles are exact (quantileExact).
-- `SYSTEM REFRESH VIEW <name>` recomputes one at once.

CREATE MATERIALIZED VIEW IF NOT EXISTS cost_per_tenant_day
REFRESH EVERY 1 MINUTE
ENGINE = MergeTree
ORDER BY (day, tenant_id, model)
AS SELECT
    toDate(completed_at) AS day,
    tenant_id,
    model,
    count() AS requests,
    countIf(status != 'ok') AS errors,
    sum(input_tokens) AS input_tokens,
    sum(cached_input_tokens) AS cached_input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cost) AS cost
FROM usage FINAL
GROUP BY day, tenant_id, model;

CREATE MATERIALIZED VIEW IF NOT EXISTS latency_per_model_minute
REFRESH EVERY 1 MINUTE
ENGINE = MergeTree
ORDER BY (minute, model)
AS SELECT
    toStartOfMinute(completed_at) AS minute,
    model,
    count() AS requests,
    countIf(status != 'ok') AS errors,
    quantileExact(0.5)(e2e_ms) AS p50_ms,
    quantileExact(0.95)(e2e_ms) AS p95_ms,
    quantileExact(0.99)(e2e_ms) AS p99_ms,
    max(e2e_ms) AS max_ms,
    avg(queue_ms) AS avg_queue_ms,
    avg(inference_ms) AS avg_inference_ms
FROM results FINAL
GROUP BY minute, model;
