#!/usr/bin/env bash
# The CPU an idle node spends per partition count: a release node (one shard pinned to
# core 0) gets a topic of N partitions (1 MiB produced through them), then its CPU
# (utime + stime from /proc) is read over SECONDS of no traffic. What an idle node spends
# should not grow with its partitions.
#
#   ops/bench-idle.sh [SECONDS] [PARTITION_COUNTS]
#
# PARTITION_COUNTS defaults to "16 10000". BIN=DIR takes sluice-node and sluice-bench
# from DIR instead of building them.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_IDLE=${1:-10}
COUNTS=${2:-16 10000}
PORT=${PORT:-19470}
. ops/bench-node.sh
pinned_bench_setup idle sluice-node sluice-bench
HZ=$(getconf CLK_TCK)
echo "Node: one shard pinned to core 0 (taskset -c 0); sluice-bench pinned to core 1."
echo "| partitions | idle node CPU (% of a core, ${SECONDS_IDLE} s) |"
echo "|---:|---:|"
for parts in $COUNTS; do
  rm -rf "$DATA/node"
  start_pinned_node "$PORT" --listen 127.0.0.1:$PORT --kafka-listen off
  taskset -c 1 "$BIN/sluice-bench" produce --bootstrap 127.0.0.1:$PORT --topic idle --partitions "$parts" \
    --record-bytes 1024 --total-mib 1 --warmup-s 0 --json >/dev/null
  sleep 2
  t0=$(awk '{print $14+$15}' /proc/$NODE_PID/stat)
  sleep "$SECONDS_IDLE"
  t1=$(awk '{print $14+$15}' /proc/$NODE_PID/stat)
  python3 -c "print('| %s | %.1f |' % ($parts, ($t1 - $t0) * 100.0 / $HZ / $SECONDS_IDLE))"
  stop_pinned_node
done
