-- What each tenant spent on each model yesterday (UTC), exact to 1e-9 USD.
SELECT
    tenant_id,
    model,
    sum(requests) AS requests,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cost) AS cost_usd
FROM cost_per_tenant_day
WHERE day = yesterday()
GROUP BY tenant_id, model
ORDER BY cost_usd DESC, tenant_id, model
