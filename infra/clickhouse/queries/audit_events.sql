-- What operators did in the last 7 days, newest first: who, from where, to what, how it
-- ended. The sink is at-least-once: LIMIT 1 BY collapses an event it loaded twice.
SELECT
    occurred_at,
    actor,
    host,
    action,
    target,
    outcome,
    details,
    sluice_version
FROM audit_events
WHERE occurred_at > now() - INTERVAL 7 DAY
ORDER BY occurred_at DESC
LIMIT 1 BY event_id
LIMIT 100
