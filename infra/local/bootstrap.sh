#!/usr/bin/env bash
# Sets up everything Sluice needs on a fresh Debian machine, idempotently:
# system packages (Java, Maven, PostgreSQL for the CDC tests, Chromium for the report's
# test), the Python virtual environment (.venv) with the
# package and its extras, and promtool (the alert rules' tests). Jars are fetched by
# `sluice up` itself (Maven, cached in ~/.m2).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

need_apt=()
command -v java >/dev/null || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need_apt+=(maven)
# PostgreSQL for the CDC tests (Debezium); they run their own cluster with initdb/pg_ctl.
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && command -v psql >/dev/null \
  || need_apt+=(postgresql)
# Headless Chromium renders `sluice report`'s HTML page in its test (skipped without it).
command -v chromium >/dev/null || need_apt+=(chromium)
if ((${#need_apt[@]})); then
  echo "bootstrap: installing ${need_apt[*]} (apt)"
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq && $sudo_cmd apt-get install -y -qq "${need_apt[@]}"
fi

python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv with $($python --version)"
  "$python" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
extras=${SLUICE_EXTRAS:-dev}
stamp=".venv/.sluice-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1) $extras"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "bootstrap: installing sluice[$extras] into .venv (pip cache makes reruns fast)"
  .venv/bin/pip install -q -e ".[$extras]"
  echo "$want" > "$stamp"
fi

# promtool checks Prometheus's config and alert rules and runs their unit tests
# (tests/unit/deploy/test_alert_rules.py). Built from the Prometheus Go module at the
# version pinned in infra/prometheus/promtool.version: several minutes on two cores, once
# per machine; the binary is cached per version in SLUICE_TOOLS_DIR.
promtool_version="$(tr -d '[:space:]' < infra/prometheus/promtool.version)"
tools_dir="${SLUICE_TOOLS_DIR:-$HOME/.cache/sluice/tools}"
promtool_dir="$tools_dir/promtool-$promtool_version"
if [ ! -x "$promtool_dir/promtool" ]; then
  go_bin="$(command -v go || echo /usr/local/go/bin/go)"
  if [ ! -x "$go_bin" ]; then
    echo "bootstrap: promtool is built with Go 1.26 or newer, and no 'go' was found:" \
      "install Go, or put a promtool $promtool_version at $promtool_dir/promtool" >&2
    exit 1
  fi
  echo "bootstrap: building promtool $promtool_version with $("$go_bin" version) (several minutes, once)"
  mkdir -p "$promtool_dir"
  GOBIN="$promtool_dir" GOFLAGS=-mod=mod "$go_bin" install \
    "github.com/prometheus/prometheus/cmd/promtool@$promtool_version"
fi
