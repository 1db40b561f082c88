#!/usr/bin/env bash
# Runs Sluice's standard workloads against a fresh release node on this machine and
# writes a results table (markdown) to stdout and to $OUT (default bench-results.md).
#
#   ops/bench-standard.sh [DURATION_S]
#
# Standard workloads: the machine's limits (baseline); 1 KiB records, 1 producer,
# 16 partitions at max rate with acks=1 and with acks=all; consume cold (from the
# start, from disk) and hot (the tail, from the cache); end-to-end latency at 50% of
# the acks=1 max rate; a small request's round trip next to a plain TCP echo.
# Then the partition-scaling and pinned one-shard rows (ops/bench-partitions.sh: 16, 256,
# 1,024 and 10,000 partitions, and one partition with 1 MiB batches), appended to the
# same table file. NODE_ARGS adds node flags (e.g. NODE_ARGS="--fsync never").
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
OUT=${OUT:-bench-results.md}
DATA=$(mktemp -d "${TMPDIR:-/tmp}/sluice-bench.XXXXXX")
PORT=${PORT:-19292}
METRICS=${METRICS_PORT:-19293}

cargo build --release -q -p sluice-node -p sluice-bench
BENCH=target/release/sluice-bench

. ops/bench-node.sh
start_bench_node "$PORT" --listen 127.0.0.1:$PORT --kafka-listen off --metrics-listen 127.0.0.1:$METRICS

COMMON="--bootstrap 127.0.0.1:$PORT --node-pid $NODE_PID --metrics 127.0.0.1:$METRICS --json"
run() { echo "+ sluice-bench $*" >&2; $BENCH "$@"; }

BASE=$(run baseline --data-dir "$DATA" --json)
P1=$(run produce $COMMON --topic std-acks1 --partitions 16 --record-bytes 1024 --acks 1 --duration-s "$DURATION")
PA=$(run produce $COMMON --topic std-acksall --partitions 16 --record-bytes 1024 --acks all --duration-s "$DURATION")
COLD=$(run consume $COMMON --topic std-acks1 --start earliest --duration-s 60)
HOT=$(run consume $COMMON --topic std-acks1 --start tail --tail-mib 16 --duration-s 60)
MAX=$(python3 -c "import json,sys; print(int(json.loads(sys.argv[1])['throughput_records_s']))" "$P1")
E2E=$(run e2e $COMMON --topic std-e2e --partitions 16 --record-bytes 1024 --acks 1 --rate $((MAX / 2)) --duration-s "$DURATION")
RTT=$(run rtt --bootstrap 127.0.0.1:$PORT --json)

python3 - "$BASE" "$P1" "$PA" "$COLD" "$HOT" "$E2E" "$RTT" <<'PY' | tee "$OUT"
import json, sys, datetime, platform, os
base, p1, pa, cold, hot, e2e, rtt = (json.loads(a) for a in sys.argv[1:])
cpu = "unknown CPU"
try:
    cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
except Exception:
    pass
print(f"Standard workloads, {datetime.date.today()}, {os.cpu_count()} cores ({cpu}), kernel {platform.release()}.")
print()
print(f"Machine limits (same run): O_DIRECT write {base['direct_write_mb_s']:.0f} MB/s, O_DIRECT read "
      f"{base['direct_read_mb_s']:.0f} MB/s (1 MiB blocks, QD1), fdatasync p50 {base['fdatasync_p50_us']} us, "
      f"loopback TCP {base['loopback_tcp_mb_s']:.0f} MB/s.")
print()
print("| workload | records/s | MB/s | vs disk write | vs loopback | p50 us | p99 us | p99.9 us | max us | node CPU cores |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
def row(name, r, lat):
    mb = r["throughput_mb_s"]
    print(f"| {name} | {r['throughput_records_s']:.0f} | {mb:.1f} | {mb/base['direct_write_mb_s']:.2f} | "
          f"{mb/base['loopback_tcp_mb_s']:.2f} | {r.get(lat+'_p50_us','-')} | {r.get(lat+'_p99_us','-')} | "
          f"{r.get(lat+'_p999_us','-')} | {r.get(lat+'_max_us','-')} | {r.get('node_cpu_cores', float('nan')):.2f} |")
row("produce 1 KiB, 1 producer, 16 partitions, acks=1 (ack latency)", p1, "ack_latency")
row("produce 1 KiB, 1 producer, 16 partitions, acks=all (ack latency)", pa, "ack_latency")
row("consume cold (from the start)", cold, "none")
row("consume hot (last 16 MiB per partition)", hot, "none")
row(f"e2e at 50% of max ({e2e['target_rate_records_s']:.0f}/s; e2e latency, ms resolution)", e2e, "e2e_latency")
print()
print(f"Fetch bytes copied per byte served (cold): {cold.get('fetch_bytes_copied_per_byte_served', 'n/a')}; "
      f"(hot): {hot.get('fetch_bytes_copied_per_byte_served', 'n/a')}.")
print(f"Small request round trip (ApiVersions, one connection): node p50 {rtt['node_rtt_p50_us']} us / p99 "
      f"{rtt['node_rtt_p99_us']} us; plain TCP echo p50 {rtt['echo_rtt_p50_us']} us / p99 {rtt['echo_rtt_p99_us']} us "
      f"(ratio p50 {rtt['node_to_echo_p50_ratio']:.2f}).")
PY

kill "$NODE_PID"
wait "$NODE_PID" 2>/dev/null || true
echo | tee -a "$OUT"
echo "Partition scaling and pinned one-shard rows (ops/bench-partitions.sh $DURATION):" | tee -a "$OUT"
echo | tee -a "$OUT"
BIN=target/release ops/bench-partitions.sh "$DURATION" | tee -a "$OUT"
