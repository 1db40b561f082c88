#!/usr/bin/env bash
# Descriptors, RSS and throughput with many closed segments (the closed-segment file pool):
#   BIN=target/release ops/bench-descriptors.sh LABEL
# One node with one shard on core 0 (taskset -c 0), sluice-bench on core 1; 100 partitions,
# 256 KiB segments, 1 GiB produced (1 KiB records, 16 KiB batches, acks=1), then read from
# the start. Prints the node's open descriptors and RSS after each phase.
set -euo pipefail
BIN=${BIN:?}; LABEL=${1:-run}; PORT=${PORT:-19500}
DATA=$(mktemp -d /var/tmp/fdb.XXXXXX)
taskset -c 0 "$BIN/sluice-node" --shards 1 --data-dir "$DATA/node" --listen 127.0.0.1:$PORT --kafka-listen off \
  --segment-bytes 262144 ${NODE_ARGS:-} 2>"$DATA/node.log" &
PID=$!
trap 'kill $PID 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 1 200); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.05; done
fds() { ls /proc/$PID/fd | wc -l; }
rss() { awk '/VmRSS/ {print int($2/1024)}' /proc/$PID/status; }
echo "[$LABEL] fds at start: $(fds)"
taskset -c 1 "$BIN/sluice-bench" produce --bootstrap 127.0.0.1:$PORT --topic segs --partitions 100 \
  --record-bytes 1024 --batch-bytes 16384 --acks 1 --total-mib 1024 --warmup-s 0 --json --node-pid $PID > "$DATA/p.json"
echo "[$LABEL] produce: $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print({k: v for k, v in d.items() if not isinstance(v, (dict, list))})' "$DATA/p.json")"
echo "[$LABEL] segments: $(ls "$DATA"/node/segs-*/ | grep -c '\.log$'); fds after produce: $(fds); rss MiB: $(rss)"
taskset -c 1 "$BIN/sluice-bench" consume --bootstrap 127.0.0.1:$PORT --topic segs --partitions 100 --start earliest \
  --duration-s 5 --warmup-s 0 --json --node-pid $PID > "$DATA/c.json"
echo "[$LABEL] consume from the start: $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print({k: v for k, v in d.items() if not isinstance(v, (dict, list))})' "$DATA/c.json")"
echo "[$LABEL] fds after consume: $(fds); rss MiB: $(rss)"
