#!/usr/bin/env bash
# How long moving data between nodes takes, and what it does to a producer's latency:
#
#   ops/bench-move.sh [MIB]      (default 1024; results also in bench-move.md)
#
# Four release nodes on this machine's loopback (ops/cluster.sh, voters 1-3, SHARDS shards
# each, default 1). Topic "moved" (8 partitions, replication factor 3, min.insync 2) gets
# acks=all records until node 1's replicas hold MIB MiB; then `sluice node drain 1 --wait`
# moves them to the other nodes and is timed. Meanwhile a producer writes 1 KiB records at
# RATE records/s (default 2000) with acks=all to topic "live" (4 partitions, RF 3); its
# ack latency is measured over the same length of time before the drain and during it.
# The machine's limits (O_DIRECT write, loopback) come from the same run. THROTTLE=BYTES
# runs the nodes with --replication-throttled-rate BYTES (per node; default none).
set -euo pipefail
cd "$(dirname "$0")/.."
MIB=${1:-1024}
OUT=${OUT:-bench-move.md}
SHARDS=${SHARDS:-1}
RATE=${RATE:-2000}
THROTTLE=${THROTTLE:-0}
DATA=$(mktemp -d "${TMPDIR:-/tmp}/sluice-bench-move.XXXXXX")

cargo build --release -q -p sluice-node -p sluice-bench -p sluice-client
BENCH=target/release/sluice-bench
CLI=target/release/sluice
run() { echo "+ sluice-bench $*" >&2; $BENCH "$@"; }

BASE=$(run baseline --data-dir "$DATA" --json)
trap 'ops/cluster.sh stop "$DATA/cluster" || true; rm -rf "$DATA"' EXIT
BOOTSTRAP=$(NODE_FLAGS="--shards $SHARDS --voters 1,2,3 --replication-throttled-rate $THROTTLE" \
    ops/cluster.sh start 4 "$DATA/cluster")
# Every node registered before the topics are placed.
for _ in $(seq 1 100); do
    [[ $($CLI --bootstrap "$BOOTSTRAP" cluster status | sed -n 's/^live nodes: //p') == 4 ]] && break
    sleep 0.2
done

# Node 1 holds 6 of the 8 partitions' replicas (24 replicas on 4 nodes): 8/6 of MIB in all.
TOTAL=$((MIB * 8 / 6))
run produce --bootstrap "$BOOTSTRAP" --json --topic moved --partitions 8 --replication-factor 3 --min-insync 2 \
    --record-bytes 1024 --acks all --total-mib "$TOTAL" --duration-s 3600 >/dev/null
HELD=$(du -sm "$DATA"/cluster/node-1/moved-* | awk '{s += $1} END {print s}')
$CLI --bootstrap "$BOOTSTRAP" topic describe moved >&2

# The producer's latency with nothing moving, for as long as the drain will take (a first
# guess: the held MiB at 100 MB/s, at least 20 s), then during the drain.
GUESS=$((HELD / 100 > 20 ? HELD / 100 : 20))
BEFORE=$(run produce --bootstrap "$BOOTSTRAP" --json --topic live --partitions 4 --replication-factor 3 \
    --min-insync 2 --record-bytes 1024 --acks all --rate "$RATE" --warmup-s 2 --duration-s "$GUESS")
run produce --bootstrap "$BOOTSTRAP" --json --topic live --record-bytes 1024 --acks all --rate "$RATE" \
    --warmup-s 1 --duration-s "$GUESS" >"$DATA/during.json" &
PRODUCER=$!
sleep 1
STARTED=$(date +%s.%N)
$CLI --bootstrap "$BOOTSTRAP" node drain 1 --wait --timeout-ms 3600000 >&2
ENDED=$(date +%s.%N)
wait "$PRODUCER"
DURING=$(cat "$DATA/during.json")
$CLI --bootstrap "$BOOTSTRAP" topic describe moved >&2

python3 - "$BASE" "$BEFORE" "$DURING" "$HELD" "$STARTED" "$ENDED" "$SHARDS" "$RATE" "$THROTTLE" <<'PY' | tee "$OUT"
import json, sys, datetime, os
base, before, during = (json.loads(a) for a in sys.argv[1:4])
held, started, ended = int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
shards, rate, throttle = sys.argv[7], sys.argv[8], int(sys.argv[9])
seconds = ended - started
mb_s = held * 1.048576 / seconds
print(f"Moving node 1's replicas to 3 other nodes (`sluice node drain 1 --wait`), {datetime.date.today()}, "
      f"{os.cpu_count()} cores, 4 nodes on one machine, {shards} shard(s) per node, "
      + (f"--replication-throttled-rate {throttle} ({throttle / 1048576:.0f} MiB/s per node)." if throttle else "no throttle."))
print()
print(f"Machine limits (same run): O_DIRECT write {base['direct_write_mb_s']:.0f} MB/s, "
      f"loopback TCP {base['loopback_tcp_mb_s']:.0f} MB/s.")
print()
print(f"Moved {held} MiB (node 1's share of topic `moved`, 6 partitions) in {seconds:.1f} s: {mb_s:.0f} MB/s, "
      f"{mb_s / base['direct_write_mb_s']:.2f} of O_DIRECT write, {mb_s / base['loopback_tcp_mb_s']:.2f} of loopback.")
print()
print(f"| acks=all producer, {rate} records/s of 1 KiB, RF 3 | records/s | ack p50 us | ack p99 us | ack p99.9 us |")
print("|---|---:|---:|---:|---:|")
for name, r in (("before the drain", before), ("during the drain", during)):
    print(f"| {name} | {r['throughput_records_s']:.0f} | {r['ack_latency_p50_us']} | {r['ack_latency_p99_us']} | "
          f"{r['ack_latency_p999_us']} |")
PY
