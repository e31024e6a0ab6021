-- drift.profiles (written by `sluice batch profile`): the reference each drift signal is
-- compared with, one row per profiled field, so that "how did this field look in the
-- reference" is a query. Contract violations found by the same job are on their field's
-- row (rule -> records); a field that only had violations has kind 'violations'.
CREATE TABLE IF NOT EXISTS drift_profiles
(
    profile_id String,
    subject_kind LowCardinality(String) COMMENT 'dataset or model',
    subject LowCardinality(String),
    created_at DateTime64(3, 'UTC'),
    engine LowCardinality(String) COMMENT 'spark, pandas or cudf',
    source String COMMENT 'file path, or topic:<name> with the offsets read',
    rows UInt64 COMMENT 'records profiled',
    contract_version Nullable(Int32),
    field String,
    kind LowCardinality(String) COMMENT 'numeric, categorical or violations',
    count UInt64,
    null_count UInt64,
    mean Nullable(Float64),
    std Nullable(Float64),
    min Nullable(Float64),
    max Nullable(Float64),
    p50 Nullable(Float64),
    p99 Nullable(Float64),
    quantiles Array(Float64) COMMENT 'inverse CDF at 0, 0.01, ..., 1',
    categories Map(String, UInt64),
    other_count UInt64,
    violations Map(String, UInt64) COMMENT 'contract rule -> records that broke it',
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(created_at)
ORDER BY (subject_kind, subject, created_at, profile_id, field);
