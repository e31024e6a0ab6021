-- End-to-end latency per model and hour over the last day: exact quantiles over
-- deduplicated results (quantiles cannot be added up from per-minute quantiles).
SELECT
    toStartOfHour(completed_at) AS hour,
    model,
    count() AS requests,
    round(quantileExact(0.5)(e2e_ms), 1) AS p50_ms,
    round(quantileExact(0.99)(e2e_ms), 1) AS p99_ms,
    round(max(e2e_ms), 1) AS max_ms,
    countIf(status != 'ok') AS errors
FROM results FINAL
WHERE completed_at >= now() - INTERVAL 1 DAY
GROUP BY hour, model
ORDER BY hour DESC, model
