-- Requests guard blocked in the last 24 hours, per tenant and reason (PII policy,
-- prompt injection, budget_exceeded, analyzer failure).
SELECT
    tenant_id,
    guard_reason AS reason,
    count() AS requests,
    max(created_at) AS last_blocked
FROM requests FINAL
WHERE stage = 'blocked' AND created_at >= now() - INTERVAL 1 DAY
GROUP BY tenant_id, reason
ORDER BY requests DESC
