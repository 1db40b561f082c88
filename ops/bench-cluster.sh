#!/usr/bin/env bash
# acks=all on a 3-node loopback cluster next to acks=1 on one node, with the machine's
# limits measured in the same run:
#
#   ops/bench-cluster.sh [DURATION_S]      (default 10; results also in bench-cluster.md)
#
# Both produce 1 KiB records from one producer to 16 partitions, as fast as they can
# (latency then is mostly time queued in the producer) and at a fixed RATE (default
# 5000 records/s, below both maxima: the latency of an ack itself). The cluster's topic has
# replication factor 3 and min.insync.replicas=2, so every acknowledged record is on all
# three nodes' disks (fsync always). All three nodes run on this machine, with SHARDS
# shards each (default 1): on a small machine they share its cores, which the cluster's
# numbers include.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
OUT=${OUT:-bench-cluster.md}
SHARDS=${SHARDS:-1}
DATA=$(mktemp -d "${TMPDIR:-/tmp}/sluice-bench-cluster.XXXXXX")
PORT=${PORT:-19292}
RATE=${RATE:-5000}

cargo build --release -q -p sluice-node -p sluice-bench -p sluice-client
BENCH=target/release/sluice-bench
run() { echo "+ sluice-bench $*" >&2; $BENCH "$@"; }

. ops/bench-node.sh
BASE=$(run baseline --data-dir "$DATA" --json)

# One node, acks=1.
start_bench_node "$PORT" --listen 127.0.0.1:$PORT --kafka-listen off --shards "$SHARDS"
SINGLE=$(run produce --bootstrap 127.0.0.1:$PORT --node-pid "$NODE_PID" --json --topic single \
    --partitions 16 --record-bytes 1024 --acks 1 --duration-s "$DURATION")
SINGLE_RATE=$(run produce --bootstrap 127.0.0.1:$PORT --json --topic single --record-bytes 1024 --acks 1 \
    --rate "$RATE" --duration-s "$DURATION")
kill "$NODE_PID"
wait "$NODE_PID" 2>/dev/null || true

# Three nodes, acks=all.
trap 'ops/cluster.sh stop "$DATA/cluster" || true; rm -rf "$DATA"' EXIT
BOOTSTRAP=$(NODE_FLAGS="--shards $SHARDS" ops/cluster.sh start 3 "$DATA/cluster")
CLUSTER=$(run produce --bootstrap "$BOOTSTRAP" --json --topic replicated --partitions 16 --replication-factor 3 \
    --min-insync 2 --record-bytes 1024 --acks all --duration-s "$DURATION")
CLUSTER_RATE=$(run produce --bootstrap "$BOOTSTRAP" --json --topic replicated --record-bytes 1024 --acks all \
    --rate "$RATE" --duration-s "$DURATION")
target/release/sluice --bootstrap "$BOOTSTRAP" topic describe replicated >&2

python3 - "$BASE" "$SINGLE" "$CLUSTER" "$SINGLE_RATE" "$CLUSTER_RATE" "$SHARDS" "$RATE" <<'PY' | tee "$OUT"
import json, sys, datetime, os
base, single, cluster, single_rate, cluster_rate = (json.loads(a) for a in sys.argv[1:6])
shards, rate = sys.argv[6], sys.argv[7]
print(f"acks=all on 3 nodes vs acks=1 on 1 node, {datetime.date.today()}, {os.cpu_count()} cores, "
      f"{shards} shard(s) per node, 1 KiB records, 1 producer, 16 partitions.")
print()
print(f"Machine limits (same run): O_DIRECT write {base['direct_write_mb_s']:.0f} MB/s, "
      f"fdatasync p50 {base['fdatasync_p50_us']} us, loopback TCP {base['loopback_tcp_mb_s']:.0f} MB/s.")
print()
print("| setup | records/s | MB/s | vs disk write | vs loopback | ack p50 us | ack p99 us | ack p99.9 us |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
rows = (
    ("1 node, acks=1, max rate", single),
    ("3 nodes, RF 3, min.insync 2, acks=all, max rate", cluster),
    (f"1 node, acks=1, {rate} records/s", single_rate),
    (f"3 nodes, RF 3, min.insync 2, acks=all, {rate} records/s", cluster_rate),
)
for name, r in rows:
    mb = r["throughput_mb_s"]
    print(f"| {name} | {r['throughput_records_s']:.0f} | {mb:.1f} | {mb/base['direct_write_mb_s']:.2f} | "
          f"{mb/base['loopback_tcp_mb_s']:.2f} | {r['ack_latency_p50_us']} | {r['ack_latency_p99_us']} | "
          f"{r['ack_latency_p999_us']} |")
PY
