#!/usr/bin/env bash
# The outside-program acceptance check: a real nats-server and moto, the
# autoscaler as `novactl run` (a separate process, AWS credentials from the
# environment as in production), and tests/outside/ecs_roundtrip.py driving
# it through the documented wire contract only.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/lib.sh"
"$root/scripts/setup-tools.sh" >/dev/null
ensure_cargo
cargo build --quiet --manifest-path "$root/Cargo.toml" -p novactl

work="$(mktemp -d)"
NATS_PID="" MOTO_PID="" NOVA_PID=""
cleanup() {
  [ -n "$NOVA_PID" ] && kill -INT "$NOVA_PID" 2>/dev/null && wait "$NOVA_PID" 2>/dev/null
  for pid in "$MOTO_PID" "$NATS_PID"; do
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  done
  rm -rf "$work"
  true
}
trap cleanup EXIT

nats_port="$(free_port)"
start_nats "$nats_port" "$work/jetstream" "$work/nats.log"
moto_port="$(free_port)"
setsid "$root/.venv/bin/moto_server" -H 127.0.0.1 -p "$moto_port" >"$work/moto.log" 2>&1 &
MOTO_PID=$!
for _ in $(seq 1 100); do grep -q "Running on" "$work/moto.log" && break; sleep 0.1; done
grep -q "Running on" "$work/moto.log" || { cat "$work/moto.log" >&2; exit 1; }
moto="http://127.0.0.1:$moto_port"

py="$root/.venv/bin/python"
"$py" "$root/tests/outside/ecs_roundtrip.py" setup --moto "$moto"
sed "s#service: novacron-\([a-z]*\) }#service: novacron-\1, endpoint_url: \"$moto\" }#" \
  "$root/deploy/policies/runbook.yaml" >"$work/policy.yaml"
AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing RUST_LOG=warn \
  "$root/target/debug/novactl" run --quiet --no-sim-load --policy "$work/policy.yaml" \
  --nats-url "nats://127.0.0.1:$nats_port" >"$work/novactl.log" 2>&1 &
NOVA_PID=$!
if ! "$py" "$root/tests/outside/ecs_roundtrip.py" check --nats "nats://127.0.0.1:$nats_port" --moto "$moto"; then
  echo "--- novactl log" >&2; cat "$work/novactl.log" >&2
  exit 1
fi
