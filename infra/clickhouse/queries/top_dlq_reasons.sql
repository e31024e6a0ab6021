-- Why records were dead-lettered, per topic and reason, most frequent first.
SELECT
    topic,
    processor,
    stage,
    error_class,
    if(details['field'] != '', concat(details['field'], ': ', details['rule']), '') AS rule,
    count() AS records,
    max(ts) AS last_seen
FROM dead_letters FINAL
GROUP BY topic, processor, stage, error_class, rule
ORDER BY records DESC
LIMIT 20
