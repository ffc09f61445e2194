#!/usr/bin/env bash
# Installs the non-Rust tools the project needs (nats-server, moto, and the
# Python client libraries) into .venv at the repository root. Idempotent:
# a second run with nothing to change takes a second.
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

"$venv/bin/nats-server" --version >/dev/null
test -x "$venv/bin/moto_server"
echo "setup-tools: ready ($("$venv/bin/nats-server" --version))"
