-- Budget alerts raised this month, newest first.
SELECT raised_at, tenant_id, period, metric, threshold_pct, used, budget_limit, hard
FROM budget_alerts FINAL
WHERE period_start >= toStartOfMonth(now())
ORDER BY raised_at DESC
