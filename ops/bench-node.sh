# Sourced by the bench scripts: starts a release node for one run.
#
#   start_bench_node WAIT_PORT NODE_FLAGS...
#
# Runs target/release/sluice-node with its data in $DATA/node (log in $DATA/node.log),
# NODE_FLAGS then $NODE_ARGS; sets NODE_PID; stops the node and removes $DATA when the
# script exits; returns once 127.0.0.1:WAIT_PORT accepts connections (at most 10 s).
start_bench_node() {
  local wait_port=$1
  shift
  # shellcheck disable=SC2086 # NODE_ARGS is a list of flags
  target/release/sluice-node --data-dir "$DATA/node" "$@" ${NODE_ARGS:-} 2>"$DATA/node.log" &
  NODE_PID=$!
  trap 'kill $NODE_PID 2>/dev/null || true; wait $NODE_PID 2>/dev/null || true; rm -rf "$DATA"' EXIT
  for _ in $(seq 1 100); do
    (exec 3<>/dev/tcp/127.0.0.1/"$wait_port") 2>/dev/null && return 0
    sleep 0.1
  done
}

# For the pinned one-shard scripts (bench-partitions.sh, bench-idle.sh, bench-tls.sh): a
# data directory $DATA (mktemp, named after NAME), $BIN (built release binaries of
# PACKAGES unless BIN=DIR is set), and an EXIT trap that stops the node and removes $DATA.
#
#   pinned_bench_setup NAME PACKAGE...
pinned_bench_setup() {
  local name=$1
  shift
  DATA=$(mktemp -d "${TMPDIR:-/var/tmp}/sluice-$name.XXXXXX")
  if [ -z "${BIN:-}" ]; then
    local packages=()
    for p in "$@"; do packages+=(-p "$p"); done
    cargo build --release -q "${packages[@]}"
    BIN=target/release
  fi
  NODE_PID=
  trap '[ -n "$NODE_PID" ] && kill $NODE_PID 2>/dev/null; rm -rf "$DATA"' EXIT
}

# For the pinned one-shard scripts: starts
# $BIN/sluice-node with one shard pinned to core 0, its data in $DATA/node (appending to
# $DATA/node.log), NODE_FLAGS then $NODE_ARGS; sets NODE_PID; returns once
# 127.0.0.1:WAIT_PORT accepts connections, or fails after 30 s. The caller's EXIT trap
# stops the node.
#
#   start_pinned_node WAIT_PORT NODE_FLAGS...
start_pinned_node() {
  local wait_port=$1
  shift
  # shellcheck disable=SC2086 # NODE_ARGS is a list of flags
  taskset -c 0 "$BIN/sluice-node" --shards 1 --data-dir "$DATA/node" "$@" ${NODE_ARGS:-} 2>>"$DATA/node.log" &
  NODE_PID=$!
  for _ in $(seq 1 600); do
    (exec 3<>/dev/tcp/127.0.0.1/"$wait_port") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "the node did not listen within 30 s" >&2
  return 1
}

# Stops the node start_pinned_node started (SIGTERM, waiting at most 30 s).
stop_pinned_node() {
  kill "$NODE_PID"
  for _ in $(seq 1 600); do kill -0 "$NODE_PID" 2>/dev/null || break; sleep 0.05; done
  wait "$NODE_PID" 2>/dev/null || true
  NODE_PID=
}
