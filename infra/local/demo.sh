#!/usr/bin/env bash
# The main job end to end on the local default stack: set up, `sluice up`, then the
# demo pushes real events through every processor and prints analytics.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
infra/local/bootstrap.sh
.venv/bin/sluice up
.venv/bin/sluice demo "$@"
