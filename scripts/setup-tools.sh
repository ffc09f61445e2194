#!/usr/bin/env bash
# Installs the non-Rust tools the project needs (nats-server, moto, and the
# Python client libraries) into .venv at the repository root, and Debian's
# (with --checkers) promtool and amtool where missing. Idempotent: a second run with nothing
# to change takes a second.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
requirements="$root/scripts/requirements-tools.txt"
stamp="$venv/.requirements-installed"

python=""
for candidate in python3 python; do
  if command -v "$candidate" >/dev/null 2>&1; then python="$candidate"; break; fi
done
if [ -z "$python" ]; then
  echo "setup-tools: python3 is required (apt-get install python3 python3-venv)" >&2
  exit 1
fi

if [ ! -x "$venv/bin/python" ]; then
  echo "setup-tools: creating $venv"
  if ! "$python" -m venv "$venv" 2>/dev/null; then
    # Debian ships venv separately.
    if command -v apt-get >/dev/null 2>&1; then
      apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
      "$python" -m venv "$venv"
    else
      echo "setup-tools: cannot create a virtualenv; install python3-venv" >&2
      exit 1
    fi
  fi
fi

if [ ! -f "$stamp" ] || ! cmp -s "$requirements" "$stamp"; then
  echo "setup-tools: installing $(grep -cv '^\s*\(#\|$\)' "$requirements") packages into $venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$stamp"
fi

# With --checkers (the tests): promtool and amtool, for the deploy/ checks
# (scripts/check-deploy.sh), and the Prometheus and Alertmanager servers
# themselves, for tests/tests/prometheus.rs and the webhook bridge's
# end-to-end test (tests/tests/alertmanager.rs), from Debian's prometheus
# and prometheus-alertmanager packages (as root, or through sudo).
checkers=false
[ "${1:-}" = "--checkers" ] && checkers=true
if $checkers && { ! command -v promtool >/dev/null 2>&1 || ! command -v amtool >/dev/null 2>&1 \
  || ! command -v prometheus >/dev/null 2>&1 || ! command -v prometheus-alertmanager >/dev/null 2>&1; }; then
  as_root=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && as_root="sudo"
  if command -v apt-get >/dev/null 2>&1; then
    echo "setup-tools: installing Debian's prometheus and prometheus-alertmanager"
    $as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y -qq --no-install-recommends \
      prometheus prometheus-alertmanager >/dev/null
  else
    echo "setup-tools: promtool and amtool are required (Debian: apt-get install prometheus prometheus-alertmanager)" >&2
    exit 1
  fi
fi

"$venv/bin/nats-server" --version >/dev/null
test -x "$venv/bin/moto_server"
echo "setup-tools: ready ($("$venv/bin/nats-server" --version))"
