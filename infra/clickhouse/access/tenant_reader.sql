-- A reader that sees one tenant's rows only: the pattern for tenant-scoped access to the
-- compose stack's ClickHouse. Here the tenant is `acme`; copy the file per tenant and
-- replace `acme` (the role, the policy, the user, the tenant_id value) and the password.
--
-- Run it as sluice_admin (the only user with access management, on the sluice database):
--
--   docker compose exec -T clickhouse clickhouse-client --user sluice_admin \
--       --password "$CLICKHOUSE_ADMIN_PASSWORD" --multiquery < infra/clickhouse/access/tenant_reader.sql
--
-- What it grants: SELECT on the tables that carry tenant_id, each filtered by a row policy
-- on tenant_id. Tables without a tenant (dead_letters, drift_*, otel_*) and the
-- aggregate views are not granted: a tenant reader cannot read them at all.
-- Users without any row policy on a table (sluice_reader, the sink) keep seeing every
-- row: that is ClickHouse's default (users_without_row_policies_can_read_rows).

CREATE ROLE IF NOT EXISTS sluice_tenant_acme;

GRANT SELECT ON sluice.requests TO sluice_tenant_acme;
GRANT SELECT ON sluice.results TO sluice_tenant_acme;
GRANT SELECT ON sluice.usage TO sluice_tenant_acme;
GRANT SELECT ON sluice.usage_windows TO sluice_tenant_acme;
GRANT SELECT ON sluice.budget_status TO sluice_tenant_acme;
GRANT SELECT ON sluice.budget_alerts TO sluice_tenant_acme;
GRANT SELECT ON sluice.pii_findings TO sluice_tenant_acme;

CREATE ROW POLICY IF NOT EXISTS tenant_acme ON
    sluice.requests, sluice.results, sluice.usage, sluice.usage_windows,
    sluice.budget_status, sluice.budget_alerts, sluice.pii_findings
    FOR SELECT USING tenant_id = 'acme' TO sluice_tenant_acme;

-- The user itself is created from the shell, so that its password never sits in a file:
--
--   export ACME_READER_PASSWORD=$(openssl rand -hex 32)   # keep it in your secret store
--   docker compose exec -T clickhouse clickhouse-client --user sluice_admin \
--       --password "$CLICKHOUSE_ADMIN_PASSWORD" --query "CREATE USER IF NOT EXISTS acme_reader
--       IDENTIFIED WITH sha256_password BY '$ACME_READER_PASSWORD'
--       DEFAULT ROLE sluice_tenant_acme SETTINGS readonly = 1"
--   docker compose exec -T clickhouse clickhouse-client --user sluice_admin \
--       --password "$CLICKHOUSE_ADMIN_PASSWORD" --query "GRANT sluice_tenant_acme TO acme_reader"
--
-- readonly = 1 keeps the user read-only whatever it is granted later.
