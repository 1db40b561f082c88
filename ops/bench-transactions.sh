#!/usr/bin/env bash
# Transactional produce next to plain idempotent produce, pinned so per-core figures mean
# something: the node (one shard, fsync always) on core 0, sluice-bench on core 1, a fresh
# data directory per run.
#
#   ops/bench-transactions.sh [ROUNDS]
#
# Needs `cargo build --release -p sluice-node -p sluice-bench`. Prints one line per run:
# records per transaction (0: none), round, records/s, MB/s, commit p50/p99 us, node CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-2}
PORT=${PORT:-19710}
for i in $(seq 1 "$ROUNDS"); do
  for per in 0 1000 10000; do
    data=$(mktemp -d "${TMPDIR:-/tmp}/sluice-txn.XXXXXX")
    taskset -c 0 target/release/sluice-node --shards 1 --fsync always --data-dir "$data/data" \
      --listen 127.0.0.1:"$PORT" --kafka-listen off 2>"$data/node.log" &
    pid=$!
    for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && break; sleep 0.1; done
    result=$(taskset -c 1 target/release/sluice-bench produce --bootstrap 127.0.0.1:"$PORT" \
      --topic t --partitions 16 --record-bytes 1024 --acks all --duration-s 8 \
      --transaction-records "$per" --node-pid "$pid" --json 2>/dev/null | python3 -c "import json,sys; d=json.load(sys.stdin); \
print(int(d['throughput_records_s']), round(d['throughput_mb_s']), d.get('commit_latency_p50_us', '-'), \
d.get('commit_latency_p99_us', '-'), round(d.get('node_cpu_cores', 0), 2))")
    echo "per-transaction=$per round $i: $result"
    kill "$pid"; wait "$pid" 2>/dev/null || true
    rm -rf "$data"
  done
done
