-- A request as received (inference.requests) has not been through guard: its user_id and
-- source are the producer's free text and may be personal data (an e-mail address as a
-- user id). The received row keeps neither; the safe and blocked rows carry guard's
-- redacted copies. Rows stored before this migration are cleared the same way.

DROP VIEW IF EXISTS ingest_requests_received_mv;

CREATE MATERIALIZED VIEW IF NOT EXISTS ingest_requests_received_mv TO requests AS
SELECT
    request_id,
    'received' AS stage,
    tenant_id,
    model,
    operation,
    '' AS source,
    CAST(NULL AS Nullable(String)) AS user_id,
    created_at,
    toUInt32(lengthUTF8(input_text)) AS input_chars,
    max_tokens,
    s.guard.action AS guard_action,
    s.guard.reason AS guard_reason,
    s.guard.policy_version AS guard_policy_version,
    s.guard.redacted AS guard_redacted,
    s.guard.injection_score AS injection_score,
    if(isNull(s.guard), map(), CAST(assumeNotNull(s.guard).entity_counts, 'Map(String, UInt32)')) AS pii_entities,
    'inference.requests' AS topic
FROM ingest_requests_received AS s;

ALTER TABLE requests UPDATE source = '', user_id = NULL WHERE stage = 'received' AND (source != '' OR user_id IS NOT NULL);
