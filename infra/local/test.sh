#!/usr/bin/env bash
# The whole test suite: lint and types, then unit, integration and end-to-end tests
# against the real local stack (started on its own ports by the test fixtures).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
infra/local/bootstrap.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
# The documentation site: its reference pages are generated from the code, so a page that
# cannot be generated, a broken link or a missing page fails here.
docs_site="$(mktemp -d)"
trap 'rm -rf "$docs_site"' EXIT
NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true \
  .venv/bin/mkdocs build --strict --quiet --site-dir "$docs_site"
.venv/bin/python -m pytest tests "$@"
