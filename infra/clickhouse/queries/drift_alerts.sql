-- What drifted in the last 7 days: each signal's alerts, the latest first.
SELECT
    subject_kind,
    subject,
    signal_name,
    count() AS alerts,
    max(ts) AS last_alert,
    argMax(detector, ts) AS last_detector,
    argMax(severity, ts) AS last_severity,
    round(argMax(reference_mean, ts), 3) AS reference_mean,
    round(argMax(current_mean, ts), 3) AS current_mean
FROM drift_alerts FINAL
WHERE ts >= now() - INTERVAL 7 DAY
GROUP BY subject_kind, subject, signal_name
ORDER BY last_alert DESC
