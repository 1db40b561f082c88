#!/usr/bin/env bash
# A/B of two builds' produce throughput on this machine, pinned so per-core figures mean
# something: the node (one shard) on core 0, sluice-bench on core 1, a fresh data
# directory per run, the two builds alternating.
#
#   ops/bench-ab.sh BEFORE_REPO AFTER_REPO ACKS ROUNDS
#
# BEFORE_REPO and AFTER_REPO are checkouts with target/release/sluice-node built (e.g. git
# worktrees); AFTER_REPO's sluice-bench is the load generator for both. Prints one line per
# run: build, acks, round, records/s, ack p50 us, node CPU cores.
set -euo pipefail
BEFORE=$1 AFTER=$2 ACKS=$3 ROUNDS=$4
PORT=${PORT:-19700}
for i in $(seq 1 "$ROUNDS"); do
  for v in before after; do
    repo=$BEFORE; [ "$v" = after ] && repo=$AFTER
    data=$(mktemp -d "${TMPDIR:-/tmp}/sluice-ab.XXXXXX")
    taskset -c 0 "$repo/target/release/sluice-node" --shards 1 --data-dir "$data/data" \
      --listen 127.0.0.1:"$PORT" --kafka-listen off 2>"$data/node.log" &
    pid=$!
    for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && break; sleep 0.1; done
    result=$(taskset -c 1 "$AFTER/target/release/sluice-bench" produce --bootstrap 127.0.0.1:"$PORT" \
      --topic ab --partitions 16 --record-bytes 1024 --acks "$ACKS" --duration-s 10 --node-pid "$pid" --json \
      2>/dev/null | python3 -c "import json,sys; d=json.load(sys.stdin); \
print(int(d['throughput_records_s']), d['ack_latency_p50_us'], round(d.get('node_cpu_cores', 0), 2))")
    echo "$v acks=$ACKS round $i: $result"
    kill "$pid"; wait "$pid" 2>/dev/null || true
    rm -rf "$data"
  done
done
