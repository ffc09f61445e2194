# Shared helpers for the project's scripts (sourced, not run).

# A free TCP port on loopback.
free_port() {
  "$root/.venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Starts nats-server with JetStream on $1 (port) with store $2, in its own
# session so a Ctrl-C meant for the foreground program does not reach it.
# Sets NATS_PID. Waits until it accepts clients.
start_nats() {
  local port=$1 store=$2 log=$3
  mkdir -p "$store"
  setsid "$root/.venv/bin/nats-server" -js -a 127.0.0.1 -p "$port" -sd "$store" >"$log" 2>&1 &
  NATS_PID=$!
  for _ in $(seq 1 100); do
    grep -q "Server is ready" "$log" 2>/dev/null && return 0
    kill -0 "$NATS_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "nats-server did not start; its log:" >&2
  cat "$log" >&2
  return 1
}

# Ensures cargo is on PATH (rustup installs into ~/.cargo/bin).
ensure_cargo() {
  if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
  command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install Rust (https://rustup.rs)" >&2; return 1; }
}
