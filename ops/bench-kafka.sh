#!/usr/bin/env bash
# Kafka clients against Sluice: kcat (librdkafka) producing and consuming through the
# Kafka listener, next to sluice-bench through the native protocol, on one fresh release
# node on this machine. Prints a markdown table.
#
#   ops/bench-kafka.sh [RECORDS]        (default 1000000 records of 1 KiB)
#
# kcat produces one record per stdin line with librdkafka's defaults (linger.ms 5,
# batch.size 1 MB) and acks=1, to a 16-partition topic; it exits once every record is
# acknowledged. kcat consumes the topic from the start to its end. sluice-bench runs the
# same sizes (1 KiB records, 16 partitions, acks=1) for 10 s twice: with its own defaults
# (16 KiB batches, linger 5 ms) and with librdkafka's batch size (1 MB); then consumes its
# topic from the start.
set -euo pipefail
cd "$(dirname "$0")/.."
RECORDS=${1:-1000000}
DATA=$(mktemp -d "${TMPDIR:-/tmp}/sluice-kbench.XXXXXX")
PORT=${PORT:-19392}
KPORT=${KAFKA_PORT:-19393}

command -v kcat >/dev/null || { echo "kcat is missing (apt-get install kcat)"; exit 1; }
cargo build --release -q -p sluice-node -p sluice-bench -p sluice-client
BENCH=target/release/sluice-bench
CLI=target/release/sluice

. ops/bench-node.sh
start_bench_node "$KPORT" --listen 127.0.0.1:$PORT --kafka-listen 127.0.0.1:$KPORT

$CLI --bootstrap 127.0.0.1:$PORT topic create kcat-bench --partitions 16 >/dev/null
# 1 KiB lines (1023 bytes and the newline), generated once, outside the timing.
python3 -c "
import sys
line = b'x' * 1023 + b'\n'
with open(sys.argv[1], 'wb') as f:
    for _ in range(int(sys.argv[2])):
        f.write(line)" "$DATA/records" "$RECORDS"

BASE=$($BENCH baseline --data-dir "$DATA" --json)
now() { date +%s.%N; }
start=$(now)
kcat -P -b 127.0.0.1:$KPORT -t kcat-bench -X acks=1 <"$DATA/records"
produce_s=$(python3 -c "print($(now) - $start)")
start=$(now)
consumed=$(kcat -C -b 127.0.0.1:$KPORT -t kcat-bench -o beginning -e -q -f '%S\n' | wc -l)
consume_s=$(python3 -c "print($(now) - $start)")

P=$($BENCH produce --bootstrap 127.0.0.1:$PORT --topic native-bench --partitions 16 --record-bytes 1024 --acks 1 --duration-s 10 --json)
PB=$($BENCH produce --bootstrap 127.0.0.1:$PORT --topic native-bench-1m --partitions 16 --record-bytes 1024 --acks 1 --batch-bytes 1000000 --duration-s 10 --json)
C=$($BENCH consume --bootstrap 127.0.0.1:$PORT --topic native-bench --start earliest --duration-s 60 --json)

python3 - "$RECORDS" "$produce_s" "$consumed" "$consume_s" "$P" "$C" "$PB" "$BASE" <<'PY'
import json, sys
records, produce_s, consumed, consume_s = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
p, c, pb, base = (json.loads(a) for a in sys.argv[5:9])
print(f"Machine limits (same run): O_DIRECT write {base['direct_write_mb_s']:.0f} MB/s, "
      f"loopback TCP {base['loopback_tcp_mb_s']:.0f} MB/s.")
print()
print("| client | workload | records | seconds | records/s | MB/s | vs disk write |")
print("|---|---|---:|---:|---:|---:|---:|")
ratio = lambda mb: f"{mb / base['direct_write_mb_s']:.2f}"
print(f"| kcat (Kafka listener) | produce acks=1 (librdkafka defaults: 1 MB batches) | {records} | {produce_s:.2f} | {records / produce_s:,.0f} | {records * 1024 / produce_s / 1e6:.0f} | {ratio(records * 1024 / produce_s / 1e6)} |")
print(f"| kcat (Kafka listener) | consume from start | {consumed} | {consume_s:.2f} | {consumed / consume_s:,.0f} | {consumed * 1024 / consume_s / 1e6:.0f} | {ratio(consumed * 1024 / consume_s / 1e6)} |")
for name, r in (("produce acks=1 (16 KiB batches)", p), ("produce acks=1 (1 MB batches)", pb), ("consume from start", c)):
    n = int(r['records'])
    print(f"| sluice-bench (native) | {name} | {n} | {n / r['throughput_records_s']:.2f} | "
          f"{r['throughput_records_s']:,.0f} | {r['throughput_mb_s']:.0f} | {ratio(r['throughput_mb_s'])} |")
PY
