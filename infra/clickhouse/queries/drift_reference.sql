-- The reference each dataset and model is compared with: the latest profile's fields.
SELECT
    subject_kind,
    subject,
    field,
    kind,
    count,
    round(null_count / greatest(count + null_count, 1), 4) AS null_rate,
    round(mean, 3) AS mean,
    round(p50, 3) AS p50,
    round(p99, 3) AS p99,
    length(categories) AS categories,
    violations
FROM drift_profiles FINAL
WHERE (subject_kind, subject, created_at) IN (
    SELECT subject_kind, subject, max(created_at) FROM drift_profiles FINAL
    GROUP BY subject_kind, subject
)
ORDER BY subject_kind, subject, field
