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
.venv/bin/python -m pytest tests "$@"
