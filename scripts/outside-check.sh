#!/usr/bin/env bash
# The outside-program acceptance check: a real nats-server and moto, the
# autoscaler as `novactl run` (a separate process, AWS credentials from the
# environment as in production), and tests/outside/ecs_roundtrip.py driving
# it through the documented wire contract only. Then the README's Python
# audit consumer (examples/python/audit_consumer.py) reads the stream from
# the run's start time, and what it printed is checked: the worker's
# trigger, decision and result, in that order.
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
since="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing RUST_LOG=warn \
  "$root/target/debug/novactl" run --quiet --no-sim-load --policy "$work/policy.yaml" \
  --nats-url "nats://127.0.0.1:$nats_port" >"$work/novactl.log" 2>&1 &
NOVA_PID=$!
if ! "$py" "$root/tests/outside/ecs_roundtrip.py" check --nats "nats://127.0.0.1:$nats_port" --moto "$moto"; then
  echo "--- novactl log" >&2; cat "$work/novactl.log" >&2
  exit 1
fi
"$py" "$root/examples/python/audit_consumer.py" --nats "nats://127.0.0.1:$nats_port" \
  --since "$since" --target worker >"$work/consumer.out"
trail="$(grep -E ' (evaluator +worker +trigger +fired|arbiter +worker +decision +scale|actuator +worker +result +succeeded) ' \
  "$work/consumer.out" | awk '{print $2, $4, $5}' | uniq | head -3 || true)"
if [ "$trail" != "$(printf 'evaluator trigger fired\narbiter decision scale\nactuator result succeeded')" ]; then
  echo "FAIL the Python audit consumer did not print trigger, decision, result for worker:" >&2
  cat "$work/consumer.out" >&2
  exit 1
fi
echo "ok   the Python audit consumer read trigger, decision, result from $since ($(wc -l <"$work/consumer.out") record(s))"
