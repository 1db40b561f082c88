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
# topic from the start. Each row gives the client's and the node's CPU microseconds per
# record (kcat's from getrusage, and it includes reading its input lines; sluice-bench's
# from /proc over its measured seconds).
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
# CPU seconds (user and system) of a process, from /proc.
cpu_of() { python3 -c "import os,sys; f=open(f'/proc/{sys.argv[1]}/stat').read().rsplit(')',1)[1].split(); print((int(f[11])+int(f[12]))/os.sysconf('SC_CLK_TCK'))" "$1"; }
# Runs a command and writes its CPU seconds (user and system, from getrusage) to FILE.
timed() {
  local out=$1; shift
  python3 -c 'import resource, subprocess, sys
rc = subprocess.call(sys.argv[2:])
r = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "w").write(str(r.ru_utime + r.ru_stime))
sys.exit(rc)' "$out" "$@"
}
start=$(now)
node_before=$(cpu_of "$NODE_PID")
timed "$DATA/kcat-produce.cpu" kcat -P -b 127.0.0.1:$KPORT -t kcat-bench -X acks=1 <"$DATA/records"
produce_s=$(python3 -c "print($(now) - $start)")
node_produce=$(python3 -c "print($(cpu_of "$NODE_PID") - $node_before)")
start=$(now)
node_before=$(cpu_of "$NODE_PID")
consumed=$(timed "$DATA/kcat-consume.cpu" kcat -C -b 127.0.0.1:$KPORT -t kcat-bench -o beginning -e -q -f '%S\n' | wc -l)
consume_s=$(python3 -c "print($(now) - $start)")
node_consume=$(python3 -c "print($(cpu_of "$NODE_PID") - $node_before)")
kcat_cpu="$(cat "$DATA/kcat-produce.cpu") $(cat "$DATA/kcat-consume.cpu") $node_produce $node_consume"

P=$($BENCH produce --bootstrap 127.0.0.1:$PORT --topic native-bench --partitions 16 --record-bytes 1024 --acks 1 --duration-s 10 --node-pid "$NODE_PID" --json)
PB=$($BENCH produce --bootstrap 127.0.0.1:$PORT --topic native-bench-1m --partitions 16 --record-bytes 1024 --acks 1 --batch-bytes 1000000 --duration-s 10 --node-pid "$NODE_PID" --json)
C=$($BENCH consume --bootstrap 127.0.0.1:$PORT --topic native-bench --start earliest --duration-s 60 --node-pid "$NODE_PID" --json)

python3 - "$RECORDS" "$produce_s" "$consumed" "$consume_s" "$P" "$C" "$PB" "$BASE" "$kcat_cpu" <<'PY'
import json, sys
records, produce_s, consumed, consume_s = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
p, c, pb, base = (json.loads(a) for a in sys.argv[5:9])
kcat_produce_cpu, kcat_consume_cpu, node_produce_cpu, node_consume_cpu = map(float, sys.argv[9].split())
print(f"Machine limits (same run): O_DIRECT write {base['direct_write_mb_s']:.0f} MB/s, "
      f"loopback TCP {base['loopback_tcp_mb_s']:.0f} MB/s.")
print()
print("| client | workload | records | seconds | records/s | MB/s | vs disk write | client CPU us/record | node CPU us/record |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
ratio = lambda mb: f"{mb / base['direct_write_mb_s']:.2f}"
per = lambda cpu, n: f"{cpu * 1e6 / max(n, 1):.2f}"
print(f"| kcat (Kafka listener) | produce acks=1 (librdkafka defaults: 1 MB batches) | {records} | {produce_s:.2f} | {records / produce_s:,.0f} | {records * 1024 / produce_s / 1e6:.0f} | {ratio(records * 1024 / produce_s / 1e6)} | {per(kcat_produce_cpu, records)} | {per(node_produce_cpu, records)} |")
print(f"| kcat (Kafka listener) | consume from start | {consumed} | {consume_s:.2f} | {consumed / consume_s:,.0f} | {consumed * 1024 / consume_s / 1e6:.0f} | {ratio(consumed * 1024 / consume_s / 1e6)} | {per(kcat_consume_cpu, consumed)} | {per(node_consume_cpu, consumed)} |")
for name, r in (("produce acks=1 (16 KiB batches)", p), ("produce acks=1 (1 MB batches)", pb), ("consume from start", c)):
    n = int(r['records'])
    print(f"| sluice-bench (native) | {name} | {n} | {n / r['throughput_records_s']:.2f} | "
          f"{r['throughput_records_s']:,.0f} | {r['throughput_mb_s']:.0f} | {ratio(r['throughput_mb_s'])} | "
          f"{r.get('bench_cpu_us_per_record', float('nan')):.2f} | {r.get('node_cpu_us_per_record', float('nan')):.2f} |")
PY
