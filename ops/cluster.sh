#!/usr/bin/env bash
# A Sluice cluster of N nodes on this machine's loopback, one process per node.
#
#   ops/cluster.sh start N DIR        start nodes 1..N (data in DIR/node-i, process id in
#                                     DIR/node-i.pid, log in DIR/node-i.log); prints the
#                                     bootstrap address list
#   ops/cluster.sh start-node DIR i   start node i again, as it was (same flags, same data)
#   ops/cluster.sh stop DIR           stop every node (SIGTERM, then SIGKILL after 20 s)
#
# Node i listens on 127.0.0.1: native 19200+i, cluster 19300+i, Kafka 19400+i (BASE_PORT,
# default 19200, moves all three). Every node is a controller voter unless NODE_FLAGS
# names the voters (e.g. "--voters 1,2,3"; needed past 7 nodes); the others follow.
# The node binary is target/release/sluice-node, or $SLUICE_NODE; extra node flags go in
# $NODE_FLAGS (e.g. "--shards 1 --session-timeout-ms 1500"), and are kept for start-node.
set -euo pipefail

usage() {
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

root="$(cd "$(dirname "$0")/.." && pwd)"
node_bin="${SLUICE_NODE:-$root/target/release/sluice-node}"

# The flags of node i of an N-node cluster whose data lives under DIR.
node_flags() {
    local n="$1" dir="$2" i="$3" base="$4" peers="" j
    for j in $(seq 1 "$n"); do
        peers+=" --peer $j=127.0.0.1:$((base + j)),127.0.0.1:$((base + 100 + j)),127.0.0.1:$((base + 200 + j))"
    done
    echo "--node-id $i --data-dir $dir/node-$i --listen 127.0.0.1:$((base + i))" \
        "--kafka-listen 127.0.0.1:$((base + 200 + i))$peers ${NODE_FLAGS:-}"
}

start_node() {
    local dir="$1" i="$2" flags pid
    flags="$(cat "$dir/node-$i.flags")"
    if [[ -f "$dir/node-$i.pid" ]] && kill -0 "$(cat "$dir/node-$i.pid")" 2>/dev/null; then
        echo "node $i is already running (pid $(cat "$dir/node-$i.pid"))" >&2
        return 1
    fi
    # shellcheck disable=SC2086 # the flags are words
    nohup "$node_bin" $flags >>"$dir/node-$i.log" 2>&1 &
    pid=$!
    echo "$pid" >"$dir/node-$i.pid"
}

wait_listening() {
    local port="$1" deadline=$((SECONDS + 30))
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        if ((SECONDS > deadline)); then
            echo "nothing listens on 127.0.0.1:$port after 30 s" >&2
            return 1
        fi
        sleep 0.1
    done
}

cmd="${1:-}"
case "$cmd" in
start)
    [[ $# -eq 3 && "$2" =~ ^[1-9]$ ]] || usage
    n="$2" dir="$3" base="${BASE_PORT:-19200}"
    [[ -x "$node_bin" ]] || { echo "no node binary at $node_bin (cargo build --release)" >&2; exit 1; }
    mkdir -p "$dir"
    bootstrap=""
    for i in $(seq 1 "$n"); do
        mkdir -p "$dir/node-$i"
        node_flags "$n" "$dir" "$i" "$base" >"$dir/node-$i.flags"
        start_node "$dir" "$i"
        bootstrap+="${bootstrap:+,}127.0.0.1:$((base + i))"
    done
    for i in $(seq 1 "$n"); do
        wait_listening $((base + i))
        # Another process on the port would answer too: the node must still be running.
        sleep 0.2
        kill -0 "$(cat "$dir/node-$i.pid")" 2>/dev/null || {
            echo "node $i exited at start; the end of $dir/node-$i.log:" >&2
            tail -5 "$dir/node-$i.log" >&2
            exit 1
        }
    done
    echo "$n" >"$dir/nodes"
    echo "$bootstrap"
    ;;
start-node)
    [[ $# -eq 3 ]] || usage
    dir="$2" i="$3"
    [[ -f "$dir/node-$i.flags" ]] || { echo "no node $i in $dir" >&2; exit 1; }
    start_node "$dir" "$i"
    port="$(sed -E 's/.*--listen 127\.0\.0\.1:([0-9]+).*/\1/' "$dir/node-$i.flags")"
    wait_listening "$port"
    ;;
stop)
    [[ $# -eq 2 ]] || usage
    dir="$2"
    pids=()
    for f in "$dir"/node-*.pid; do
        [[ -f "$f" ]] || continue
        pid="$(cat "$f")"
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
        fi
    done
    deadline=$((SECONDS + 20))
    for pid in "${pids[@]}"; do
        while kill -0 "$pid" 2>/dev/null; do
            if ((SECONDS > deadline)); then
                kill -KILL "$pid" 2>/dev/null || true
                break
            fi
            sleep 0.1
        done
    done
    ;;
*) usage ;;
esac
