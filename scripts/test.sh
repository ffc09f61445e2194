#!/usr/bin/env bash
# The project's tests: installs the tools they need (nats-server, moto, the
# Python clients) into .venv, runs every Rust test (each end-to-end test
# starts its own nats-server and moto), then the schema, deploy/ and
# outside-program checks.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/lib.sh"
"$root/scripts/setup-tools.sh" --checkers
ensure_cargo
# The end-to-end tests also run the services' own binaries as processes.
cargo build --manifest-path "$root/Cargo.toml" --workspace --bins --locked
cargo test --manifest-path "$root/Cargo.toml" --workspace --locked
"$root/.venv/bin/python" "$root/scripts/check_schemas.py" --self-test
"$root/scripts/check-deploy.sh"
"$root/scripts/outside-check.sh"
