-- PII found by guard over the last 7 days, per entity type and tenant.
SELECT
    entity_type,
    tenant_id,
    count() AS findings,
    uniqExact(request_id) AS requests,
    round(avg(score), 3) AS avg_score,
    groupUniqArray(action) AS actions
FROM pii_findings FINAL
WHERE ts >= now() - INTERVAL 7 DAY
GROUP BY entity_type, tenant_id
ORDER BY findings DESC
