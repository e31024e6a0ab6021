-- Latency quantiles per model and minute over the last hour (from the refreshable view).
SELECT minute, model, requests, errors, p50_ms, p95_ms, p99_ms, max_ms
FROM latency_per_model_minute
WHERE minute >= now() - INTERVAL 1 HOUR
ORDER BY minute DESC, model
