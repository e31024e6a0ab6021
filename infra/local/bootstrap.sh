#!/usr/bin/env bash
# Sets up everything Sluice needs on a fresh Debian machine, idempotently:
# system packages (Java, Maven, PostgreSQL for the CDC tests, Chromium for the report's
# test), the Python virtual environment (.venv) with the package and its extras, and
# promtool and amtool (the alerting configs' tests). Jars are fetched by `sluice up`
# itself (Maven, cached in ~/.m2).
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

# Prometheus's promtool and Alertmanager's amtool check the monitoring configs and run
# the alert rules' unit tests (tests/unit/deploy/test_alert_rules.py). Each is built from
# its project's Go module at the version pinned beside its config
# (infra/prometheus/promtool.version, infra/alertmanager/amtool.version), once per
# machine: promtool takes several minutes on two cores, amtool about two more. The
# binaries are cached per version in SLUICE_TOOLS_DIR (default ~/.cache/sluice/tools).
tools_dir="${SLUICE_TOOLS_DIR:-$HOME/.cache/sluice/tools}"
go_tool() {  # name, package, version file
  local name=$1 package=$2 version
  version="$(tr -d '[:space:]' < "$3")"
  local dir="$tools_dir/$name-$version"
  [ -x "$dir/$name" ] && return 0
  local go_bin
  go_bin="$(command -v go || echo /usr/local/go/bin/go)"
  if [ ! -x "$go_bin" ]; then
    echo "bootstrap: $name is built with Go 1.26 or newer, and no 'go' was found:" \
      "install Go, or put $name $version at $dir/$name" >&2
    exit 1
  fi
  echo "bootstrap: building $name $version with $("$go_bin" version) (minutes, once)"
  mkdir -p "$dir"
  GOBIN="$dir" GOFLAGS=-mod=mod "$go_bin" install "$package@$version"
}
go_tool promtool github.com/prometheus/prometheus/cmd/promtool infra/prometheus/promtool.version
go_tool amtool github.com/prometheus/alertmanager/cmd/amtool infra/alertmanager/amtool.version
