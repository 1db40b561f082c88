#!/usr/bin/env bash
# Produce throughput as the partition count grows, and the pinned one-shard rows, on this
# machine, against a fresh release node per row. The node runs one shard pinned to core 0
# (taskset -c 0); sluice-bench runs on core 1 (taskset -c 1).
#
#   ops/bench-partitions.sh [DURATION_S] [PARTITION_COUNTS]
#
# PARTITION_COUNTS defaults to "16 256 1024 10000". Each row: 1 KiB records, one
# producer, Kafka's default client batching (16 KiB batches, linger 5 ms), acks=1, the
# node's default fsync policy (always) unless NODE_ARGS says otherwise. After each row
# the node is stopped, the data directory measured (du) against the bytes acknowledged,
# and the node restarted on it to time its start (until it answers a metadata request
# for the topic). Then the single-partition row: 1 MiB batches (1,000-byte records).
# BIN=DIR takes sluice-node and sluice-bench from DIR instead of building them.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
COUNTS=${2:-16 256 1024 10000}
PORT=${PORT:-19400}
. ops/bench-node.sh
pinned_bench_setup parts sluice-node sluice-bench
start_node() { start_pinned_node "$PORT" --listen 127.0.0.1:$PORT --kafka-listen off; }
stop_node() { stop_pinned_node; }
field() { python3 -c "import json,sys; d=json.loads(sys.argv[1]); print(d.get('$2', 'nan'))" "$1"; }

BASE=$(taskset -c 1 "$BIN/sluice-bench" baseline --data-dir "$DATA" --json)
echo "Node: one shard pinned to core 0 (taskset -c 0); sluice-bench pinned to core 1 (taskset -c 1)."
echo "Machine limits (same run, measured from core 1): $BASE"
echo
echo "| partitions | batch | records/s | MB/s | vs O_DIRECT write | ack p50 us | p99 us | node CPU cores | node CPU us/record | records/batch | node CPU us/batch | bench CPU us/record | data dir / bytes acked | node RSS MiB | restart s |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
row() {
  local parts=$1 batch=$2 record=$3
  rm -rf "$DATA/node"
  start_node
  local r
  r=$(taskset -c 1 "$BIN/sluice-bench" produce --bootstrap 127.0.0.1:$PORT --topic scale --partitions "$parts" \
    --record-bytes "$record" --batch-bytes "$batch" --linger-ms 5 --acks 1 --duration-s "$DURATION" \
    --node-pid "$NODE_PID" --json)
  local rss du
  rss=$(awk '/VmHWM/ {print int($2/1024)}' /proc/$NODE_PID/status)
  # Measured while the node runs: what it holds on disk in service, reserves included.
  du=$(du -sb "$DATA/node" | cut -f1)
  stop_node
  local t0 t1
  t0=$(date +%s.%N)
  start_node
  taskset -c 1 "$BIN/sluice-bench" produce --bootstrap 127.0.0.1:$PORT --topic scale --partitions "$parts" \
    --record-bytes "$record" --total-mib 1 --warmup-s 0 --json >/dev/null
  t1=$(date +%s.%N)
  stop_node
  python3 - "$r" "$BASE" "$parts" "$batch" "$du" "$rss" "$t0" "$t1" <<'PY'
import json, sys
r, base = json.loads(sys.argv[1]), json.loads(sys.argv[2])
parts, batch, du, rss, t0, t1 = sys.argv[3:]
mb, rec = r["throughput_mb_s"], r["throughput_records_s"]
acked = r["value_bytes_acked_total"]
cpu = r.get("node_cpu_cores", float("nan"))
print(f"| {parts} | {int(batch)//1024} KiB | {rec:.0f} | {mb:.1f} | {mb / base['direct_write_mb_s']:.2f} | "
      f"{r.get('ack_latency_p50_us', '-')} | {r.get('ack_latency_p99_us', '-')} | {cpu:.2f} | {cpu * 1e6 / max(rec, 1):.2f} | "
      f"{r.get('records_per_batch', float('nan')):.1f} | {r.get('node_cpu_us_per_batch', float('nan')):.1f} | "
      f"{r.get('bench_cpu_us_per_record', float('nan')):.2f} | {int(du) / max(acked, 1):.2f} | {rss} | {float(t1) - float(t0):.1f} |")
PY
}
for p in $COUNTS; do row "$p" 16384 1024; done
row 1 1048576 1000
