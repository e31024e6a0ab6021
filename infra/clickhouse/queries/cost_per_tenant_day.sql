-- Spend per tenant and day over the last 30 days (the view refreshes every minute).
SELECT
    day,
    tenant_id,
    sum(requests) AS requests,
    sum(input_tokens + output_tokens) AS tokens,
    sum(cost) AS cost_usd
FROM cost_per_tenant_day
WHERE day >= today() - 30
GROUP BY day, tenant_id
ORDER BY day DESC, cost_usd DESC
