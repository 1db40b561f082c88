#!/usr/bin/env bash
# Kafka listener throughput over TLS next to plaintext, with kcat (librdkafka), on this
# machine: one fresh release node per protocol, one shard pinned to core 0, kcat pinned
# to core 1. Prints a markdown table.
#
#   ops/bench-tls.sh [RECORDS]        (default 500000 records of 1 KiB)
#
# Each row: kcat produces RECORDS records (one per stdin line, librdkafka's defaults:
# linger.ms 5, batch.size 1 MB, acks=1 here) to a 16-partition topic and exits once every
# record is acknowledged; then kcat consumes the topic from its start to its end. The TLS
# row's certificate (EC P-256, TLS 1.3 as rustls and OpenSSL 3 agree) comes from a CA made
# here with openssl; the next row turns librdkafka's Nagle off; the last logs in over
# SASL_SSL (SCRAM-SHA-256) as a user whose ACLs allow the topic, with `--authorizer acl`
# on, so every request is also authorized (the user and ACLs are made with
# tests/kafka/admin.py, confluent-kafka's AdminClient). A second table does the same for
# the native listener with sluice-bench (see below). BIN=DIR takes sluice-node, sluice and
# sluice-bench from DIR instead of building them.
set -euo pipefail
cd "$(dirname "$0")/.."
RECORDS=${1:-500000}
PORT=${PORT:-19492}
KPORT=${KAFKA_PORT:-19493}
command -v kcat >/dev/null || { echo "kcat is missing (apt-get install kcat)"; exit 1; }
command -v openssl >/dev/null || { echo "openssl is missing (apt-get install openssl)"; exit 1; }
. ops/bench-node.sh
pinned_bench_setup tls sluice-node sluice-client sluice-bench

# The test PKI: a CA and a certificate for 127.0.0.1.
(
  cd "$DATA"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.pem \
    -days 2 -subj /CN=bench-ca 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout node.key -out node.csr \
    -subj /CN=127.0.0.1 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >node.ext
  openssl x509 -req -in node.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out node.pem -days 2 \
    -extfile node.ext 2>/dev/null
)
python3 -c "
import sys
line = b'x' * 1023 + b'\n'
with open(sys.argv[1], 'wb') as f:
    for _ in range(int(sys.argv[2])):
        f.write(line)" "$DATA/records" "$RECORDS"

start_node() {
  rm -rf "$DATA/node"
  start_pinned_node "$KPORT" --listen 127.0.0.1:$PORT "$@"
}
now() { date +%s.%N; }
mb_s() { python3 -c "import sys; print(f'{int(sys.argv[1]) * 1024 / (float(sys.argv[3]) - float(sys.argv[2])) / 1e6:.1f}')" "$@"; }

echo "| listener | produce MB/s | consume MB/s | node CPU s |"
echo "|---|---:|---:|---:|"
row() {
  local name=$1 listen=$2
  shift 2
  start_node --kafka-listen "$listen" "${NODE_TLS[@]}"
  if [ -z "${SETUP:-}" ]; then
    "$BIN/sluice" --bootstrap 127.0.0.1:$PORT topic create tls-bench --partitions 16 >/dev/null 2>&1
  else
    "$SETUP"
  fi
  local t0 t1 t2
  t0=$(now)
  taskset -c 1 kcat -P -b 127.0.0.1:$KPORT -t tls-bench -X acks=1 "$@" <"$DATA/records"
  t1=$(now)
  local got
  got=$(taskset -c 1 kcat -C -b 127.0.0.1:$KPORT -t tls-bench -o beginning -e -q -f '%o\n' "$@" | wc -l)
  t2=$(now)
  [ "$got" -eq "$RECORDS" ] || { echo "$name: consumed $got of $RECORDS records" >&2; exit 1; }
  local cpu
  cpu=$(awk '{print ($14 + $15) / 100}' /proc/$NODE_PID/stat)
  echo "| $name | $(mb_s "$RECORDS" "$t0" "$t1") | $(mb_s "$RECORDS" "$t1" "$t2") | $cpu |"
  stop_pinned_node
}
NODE_TLS=()
row plaintext "127.0.0.1:$KPORT"
NODE_TLS=(--tls-cert "$DATA/node.pem" --tls-key "$DATA/node.key")
row "TLS (SSL://)" "SSL://127.0.0.1:$KPORT" -X security.protocol=ssl -X ssl.ca.location="$DATA/ca.pem"
# librdkafka leaves Nagle's algorithm on by default; over TLS it writes a request as more
# than one record, and the second waits for the node's (delayed) ACK of the first.
row "TLS, socket.nagle.disable=true" "SSL://127.0.0.1:$KPORT" -X security.protocol=ssl \
  -X ssl.ca.location="$DATA/ca.pem" -X socket.nagle.disable=true
# SASL_SSL with ACLs: the super user made from SLUICE_BOOTSTRAP_USER makes the user
# `bench` and its ACLs, then kcat logs in as it.
sasl_setup() {
  local admin=(python3 tests/kafka/admin.py --bootstrap 127.0.0.1:$KPORT --tls-ca "$DATA/ca.pem"
    --sasl-mechanism SCRAM-SHA-256 --sasl-user admin --sasl-password admin-secret)
  for _ in $(seq 1 100); do "${admin[@]}" users >/dev/null 2>&1 && break; sleep 0.1; done
  # The native listener asks for a login too: the topic is made as the admin.
  SLUICE_SASL_PASSWORD=admin-secret "$BIN/sluice" --bootstrap 127.0.0.1:$PORT --security-protocol SASL_PLAINTEXT \
    --sasl-mechanism SCRAM-SHA-256 --sasl-username admin topic create tls-bench --partitions 16 >/dev/null
  "${admin[@]}" set-user bench SCRAM-SHA-256 bench-secret >/dev/null
  "${admin[@]}" acl-add TOPIC tls-bench LITERAL User:bench WRITE ALLOW >/dev/null
  "${admin[@]}" acl-add TOPIC tls-bench LITERAL User:bench READ ALLOW >/dev/null
}
export SLUICE_BOOTSTRAP_USER=admin:admin-secret
SETUP=sasl_setup
NODE_TLS=(--tls-cert "$DATA/node.pem" --tls-key "$DATA/node.key" --authorizer acl --super-users User:admin
  --listen SASL_PLAINTEXT://127.0.0.1:$PORT)
row "SASL_SSL (SCRAM-SHA-256), ACLs" "SASL_SSL://127.0.0.1:$KPORT" -X security.protocol=sasl_ssl \
  -X ssl.ca.location="$DATA/ca.pem" -X sasl.mechanism=SCRAM-SHA-256 -X sasl.username=bench \
  -X sasl.password=bench-secret

# The native listener, with sluice-bench (the client crate) pinned to core 1: produce for
# DURATION seconds (1 KiB records, 16 KiB batches, acks=1), then consume what was stored,
# over PLAINTEXT, SSL and SASL_SSL (SCRAM-SHA-512, as a user whose ACLs allow the topic,
# with `--authorizer acl` on; the user and ACLs made with the sluice CLI as the bootstrap
# super user).
DURATION=${DURATION:-8}
echo
echo "| native listener (sluice-bench) | produce MB/s | produce p99 ms | consume MB/s | node CPU s |"
echo "|---|---:|---:|---:|---:|"
native_row() {
  local name=$1 protocol=$2
  shift 2
  rm -rf "$DATA/node"
  start_pinned_node "$PORT" --listen "$protocol://127.0.0.1:$PORT" --kafka-listen off "$@"
  local client=(--bootstrap 127.0.0.1:$PORT --security-protocol "$protocol")
  [ "$protocol" = PLAINTEXT ] || [ "$protocol" = SASL_PLAINTEXT ] || client+=(--tls-ca "$DATA/ca.pem")
  if [ "${protocol#SASL}" != "$protocol" ]; then
    local admin=("$BIN/sluice" "${client[@]}" --sasl-username admin)
    for _ in $(seq 1 100); do SLUICE_SASL_PASSWORD=admin-secret "${admin[@]}" topic list >/dev/null 2>&1 && break; sleep 0.1; done
    SLUICE_SASL_PASSWORD=admin-secret SLUICE_USER_PASSWORD=bench-secret "${admin[@]}" user create bench >/dev/null 2>&1
    SLUICE_SASL_PASSWORD=admin-secret "${admin[@]}" acl add --principal User:bench --topic tls-bench \
      --operation read,write >/dev/null 2>&1
    SLUICE_SASL_PASSWORD=admin-secret "${admin[@]}" acl add --principal User:bench --cluster \
      --operation create >/dev/null 2>&1
    client+=(--sasl-username bench)
  fi
  local produced consumed
  produced=$(SLUICE_SASL_PASSWORD=bench-secret taskset -c 1 "$BIN/sluice-bench" produce "${client[@]}" \
    --topic tls-bench --partitions 16 --duration-s "$DURATION" --warmup-s 1 --json 2>/dev/null)
  consumed=$(SLUICE_SASL_PASSWORD=bench-secret taskset -c 1 "$BIN/sluice-bench" consume "${client[@]}" \
    --topic tls-bench --duration-s "$DURATION" --warmup-s 0 --json 2>/dev/null)
  local cpu
  cpu=$(awk '{print ($14 + $15) / 100}' /proc/$NODE_PID/stat)
  python3 - "$name" "$produced" "$consumed" "$cpu" <<'PY'
import json, sys
name, produced, consumed, cpu = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
print(f"| {name} | {produced['throughput_mb_s']:.1f} | {produced['ack_latency_p99_us'] / 1000:.2f} "
      f"| {consumed['throughput_mb_s']:.1f} | {cpu} |")
PY
  stop_pinned_node
}
unset SLUICE_BOOTSTRAP_USER
native_row plaintext PLAINTEXT
native_row "TLS (SSL://)" SSL --tls-cert "$DATA/node.pem" --tls-key "$DATA/node.key"
export SLUICE_BOOTSTRAP_USER=admin:admin-secret:SCRAM-SHA-512
native_row "SASL_SSL (SCRAM-SHA-512), ACLs" SASL_SSL --tls-cert "$DATA/node.pem" --tls-key "$DATA/node.key" \
  --authorizer acl --super-users User:admin
