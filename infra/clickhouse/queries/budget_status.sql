-- Every tenant's spend in the current day and month against its budget, closest to
-- the limit first (share_pct is the larger of the token and USD shares).
SELECT
    tenant_id,
    period,
    period_start,
    tokens,
    token_limit,
    cost AS cost_usd,
    cost_limit AS cost_limit_usd,
    round(greatest(
        if(token_limit > 0, 100 * tokens / token_limit, 0),
        if(cost_limit > 0, toFloat64(100 * cost / cost_limit), 0)
    ), 1) AS share_pct,
    hard
FROM budget_status FINAL
WHERE period_end > now()
ORDER BY share_pct DESC, tenant_id, period
