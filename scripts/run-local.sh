#!/usr/bin/env bash
# Runs the autoscaler locally: its own NATS with JetStream, all five stages
# in one process (`novactl run`), a simulated fleet with a load that rises
# and falls, and the audit stream printed live. Ctrl-C stops everything.
#
#   scripts/run-local.sh [POLICY]     (default deploy/policies/demo.yaml)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/lib.sh"
policy="${1:-$root/deploy/policies/demo.yaml}"

"$root/scripts/setup-tools.sh"
ensure_cargo
cargo build --quiet --manifest-path "$root/Cargo.toml" -p novactl

state="$root/.nova/local"
rm -rf "$state"   # a fresh fleet and history every run
mkdir -p "$state"
port="${NOVA_LOCAL_PORT:-$(free_port)}"
metrics_port="${NOVA_LOCAL_METRICS_PORT:-$(free_port)}"
NATS_PID=""
cleanup() {
  [ -n "$NATS_PID" ] && kill "$NATS_PID" 2>/dev/null && wait "$NATS_PID" 2>/dev/null
  true
}
trap cleanup EXIT
start_nats "$port" "$state/jetstream" "$state/nats-server.log"

cat <<MSG
NATS with JetStream on nats://127.0.0.1:$port (log: $state/nats-server.log)
Policy: $policy
Metrics: http://127.0.0.1:$metrics_port/metrics
Watch the simulated web fleet scale up as load rises and down as it falls
(a full cycle takes about eight minutes). Ctrl-C stops everything.
In another terminal: NOVA_NATS_URL=nats://127.0.0.1:$port target/debug/novactl audit tail -f

MSG
RUST_LOG="${RUST_LOG:-warn}" "$root/target/debug/novactl" run \
  --policy "$policy" --nats-url "nats://127.0.0.1:$port" --metrics-addr "127.0.0.1:$metrics_port" || true
