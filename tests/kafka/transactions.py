"""Kafka transactions through confluent-kafka (librdkafka): transactional producers, a
consume-transform-produce loop and read_committed consumers. Each command prints JSON
lines.

usage: transactions.py --bootstrap HOST:PORT [--tls-*/--sasl-* (common.py)] COMMAND ...
  produce TOPIC PARTITIONS TXN_ID PLAN   runs one transaction per letter of PLAN (c: commit,
                                         a: abort), each writing 3 values "TXN_ID-K-J"
                                         (K the transaction's number) over the partitions;
                                         {"txn", "outcome", "values"} per transaction
  open TOPIC TXN_ID TIMEOUT_MS           begins a transaction (timeout TIMEOUT_MS), writes
                                         "TXN_ID-open-0" to partition 0, waits until it is
                                         acknowledged, prints {"written"} and exits without
                                         ending the transaction (the coordinator must abort
                                         it after its timeout)
  consume TOPIC ISOLATION [EXPECT]       reads every partition from the start with
                                         isolation.level ISOLATION until EXPECT values (or,
                                         without EXPECT, until 5 s pass with nothing new);
                                         {"value", "partition", "offset"} per record, then
                                         {"done", "count"}
  watermarks TOPIC PARTITION ISOLATION   {"low", "high"} (high: the last stable offset for
                                         read_committed)
  transform IN OUT GROUP TXN_ID COUNT [PACE_MS]
                                         consume-transform-produce: reads IN in GROUP,
                                         writes "out-" + value to OUT and commits the input
                                         offsets in the same transaction, up to 10 records
                                         at a time, until COUNT records were committed;
                                         aborts (and rewinds to the committed offsets) each
                                         4th transaction, and any that fails; with PACE_MS
                                         {"progress"} after each commit and a pause;
                                         {"aborted_on"} per failed one; at the end
                                         {"committed", "aborted"}
  bench TOPIC PARTITIONS TXNS PER_TXN MODE
                                         TXNS rounds of PER_TXN 1 KiB records, each round a
                                         transaction (MODE txn) or an idempotent producer's
                                         flush (MODE idempotent); {"mode", "records_per_s",
                                         "p50_ms", "p99_ms"} (commit or flush latency)
"""

import argparse
import os
import time

from common import add_security_arguments, confluent_security, deadline, emit, fail, run

# The client settings of the --tls-* and --sasl-* arguments (common.add_security_arguments),
# and librdkafka's debug contexts from SLUICE_RDKAFKA_DEBUG (e.g. "eos,cgrp,protocol"),
# which it then logs to stderr.
SECURITY = {}
DEBUG = {"debug": os.environ["SLUICE_RDKAFKA_DEBUG"]} if os.environ.get("SLUICE_RDKAFKA_DEBUG") else {}


def producer(bootstrap, txn_id, timeout_ms=10_000):
    from confluent_kafka import Producer

    return Producer(
        {
            "bootstrap.servers": bootstrap,
            **SECURITY,
            **DEBUG,
            "transactional.id": txn_id,
            "transaction.timeout.ms": timeout_ms,
            "linger.ms": 5,
            "request.timeout.ms": 5_000,
            "message.timeout.ms": timeout_ms,
        }
    )


def produce(args):
    topic, partitions, txn_id, plan = args.rest[0], int(args.rest[1]), args.rest[2], args.rest[3]
    p = producer(args.bootstrap, txn_id)
    p.init_transactions(30)
    for k, letter in enumerate(plan):
        p.begin_transaction()
        values = [f"{txn_id}-{k}-{j}" for j in range(3)]
        for j, value in enumerate(values):
            p.produce(topic, value=value.encode(), partition=(k + j) % partitions)
        if letter == "c":
            p.commit_transaction(30)
            outcome = "committed"
        else:
            p.flush(30)
            p.abort_transaction(30)
            outcome = "aborted"
        emit(txn=k, outcome=outcome, values=values)


def open_transaction(args):
    topic, txn_id, timeout_ms = args.rest[0], args.rest[1], int(args.rest[2])
    p = producer(args.bootstrap, txn_id, timeout_ms)
    p.init_transactions(30)
    p.begin_transaction()
    acked = []
    p.produce(topic, value=f"{txn_id}-open-0".encode(), partition=0, on_delivery=lambda err, msg: acked.append(err))
    p.flush(30)
    if acked != [None]:
        fail(f"the open transaction's record was not acknowledged: {acked}")
    emit(written=True)
    # Leave without ending the transaction, as a producer that died would.
    os._exit(0)


def consumer(bootstrap, isolation, group=None, auto_commit=False):
    from confluent_kafka import Consumer

    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            **SECURITY,
            **DEBUG,
            "group.id": group or f"reader-{time.monotonic_ns()}",
            "isolation.level": isolation,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": auto_commit,
            "enable.partition.eof": False,
        }
    )


def consume(args):
    topic, isolation = args.rest[0], args.rest[1]
    expect = int(args.rest[2]) if len(args.rest) > 2 else None
    c = consumer(args.bootstrap, isolation)
    c.subscribe([topic])
    count = 0
    quiet_since = time.monotonic()
    while True:
        msg = c.poll(0.2)
        if msg is None:
            if expect is None and count > 0 and time.monotonic() - quiet_since > 5:
                break
            if expect is None and count == 0 and time.monotonic() - quiet_since > 10:
                break
            if expect is not None and time.monotonic() - quiet_since > 30:
                stalled(c, count)
                break
            continue
        if msg.error():
            fail(f"consume error: {msg.error()}")
        count += 1
        quiet_since = time.monotonic()
        emit(value=msg.value().decode(), partition=msg.partition(), offset=msg.offset())
        if expect is not None and count >= expect:
            break
    c.close()
    emit(done=True, count=count)


def stalled(c, count):
    """Says where a consumer that expected more stands: for each partition it was
    given, its position and the end it sees at its isolation level."""
    for tp in c.assignment():
        low, high = c.get_watermark_offsets(tp, timeout=10, cached=False)
        (position,) = c.position([tp])
        emit(stalled=count, partition=tp.partition, position=position.offset, low=low, high=high)


def watermarks(args):
    from confluent_kafka import TopicPartition

    topic, partition, isolation = args.rest[0], int(args.rest[1]), args.rest[2]
    c = consumer(args.bootstrap, isolation)
    low, high = c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10, cached=False)
    c.close()
    emit(low=low, high=high)


# A consumer's calls report a coordinator that moved without marking it retriable.
COORDINATOR_MOVED = {"NOT_COORDINATOR", "COORDINATOR_NOT_AVAILABLE", "COORDINATOR_LOAD_IN_PROGRESS", "_TIMED_OUT", "_TRANSPORT"}


def retrying(what, action, attempts=60):
    """Runs a transactional call, retrying what librdkafka says is retriable (a
    coordinator or leader that moved); re-raises what needs an abort; fails on fatal."""
    from confluent_kafka import KafkaException

    for _ in range(attempts):
        try:
            return action()
        except KafkaException as e:
            err = e.args[0]
            if err.fatal():
                fail(f"{what}: fatal error {err}")
            moved = what == "committed" and err.name() in COORDINATOR_MOVED
            if err.txn_requires_abort() or not (err.retriable() or moved):
                raise
            time.sleep(0.2)
    fail(f"{what}: still failing after {attempts} tries")


def rewind(c):
    """Seeks the consumer back to its group's committed offsets."""
    from confluent_kafka import TopicPartition

    for tp in retrying("committed", lambda: c.committed(c.assignment(), timeout=10)):
        c.seek(TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else 0))


def transform(args):
    """Consume-transform-produce; with PACE_MS, waits that long between transactions and
    prints {"progress"} after each commit (the cluster test kills nodes meanwhile)."""
    from confluent_kafka import KafkaException

    source, sink, group, txn_id, count = args.rest[0], args.rest[1], args.rest[2], args.rest[3], int(args.rest[4])
    pace_ms = int(args.rest[5]) if len(args.rest) > 5 else 0
    c = consumer(args.bootstrap, "read_committed", group)
    c.subscribe([source])
    p = producer(args.bootstrap, txn_id, 30_000)
    retrying("init_transactions", lambda: p.init_transactions(30))
    committed = aborted = txns = 0
    while committed < count:
        batch = c.consume(num_messages=10, timeout=1.0)
        batch = [m for m in batch if not m.error()]
        if not batch:
            continue
        txns += 1
        try:
            p.begin_transaction()
            for m in batch:
                p.produce(sink, key=m.key(), value=b"out-" + m.value(), partition=m.partition())
            offsets = c.position(c.assignment())
            retrying("send_offsets", lambda: p.send_offsets_to_transaction(offsets, c.consumer_group_metadata(), 30))
            if txns % 4 == 0:
                raise RuntimeError("abort on purpose")
            retrying("commit", lambda: p.commit_transaction(30))
        except (KafkaException, RuntimeError) as e:
            retrying("abort", lambda: p.abort_transaction(30))
            aborted += len(batch)
            rewind(c)
            if isinstance(e, KafkaException):
                emit(aborted_on=str(e.args[0]))
            continue
        committed += len(batch)
        if pace_ms:
            emit(progress=committed)
            time.sleep(pace_ms / 1000)
    c.close()
    emit(committed=committed, aborted=aborted)


def bench(args):
    """Throughput and latency of TXNS transactions of PER_TXN 1 KiB records each over
    PARTITIONS partitions (MODE txn), or of the same records from an idempotent producer
    flushed as often (MODE idempotent): {"mode", "records_per_s", "p50_ms", "p99_ms"}
    (latency of each commit, or of each flush)."""
    from confluent_kafka import Producer

    topic, partitions, txns, per_txn, mode = args.rest[0], int(args.rest[1]), int(args.rest[2]), int(args.rest[3]), args.rest[4]
    config = {"bootstrap.servers": args.bootstrap, **SECURITY, "linger.ms": 5, "acks": "all", "enable.idempotence": True}
    if mode == "txn":
        config["transactional.id"] = f"bench-{time.monotonic_ns()}"
    p = Producer(config)
    if mode == "txn":
        p.init_transactions(30)
    value = b"x" * 1024
    latencies = []
    started = time.monotonic()
    for t in range(txns):
        if mode == "txn":
            p.begin_transaction()
        for i in range(per_txn):
            while True:
                try:
                    p.produce(topic, value=value, partition=(t * per_txn + i) % partitions)
                    break
                except BufferError:
                    p.poll(0.01)
        ending = time.monotonic()
        if mode == "txn":
            p.commit_transaction(30)
        else:
            p.flush(30)
        latencies.append((time.monotonic() - ending) * 1000)
    elapsed = time.monotonic() - started
    latencies.sort()
    emit(
        mode=mode,
        records_per_s=round(txns * per_txn / elapsed),
        p50_ms=round(latencies[len(latencies) // 2], 2),
        p99_ms=round(latencies[min(len(latencies) - 1, len(latencies) * 99 // 100)], 2),
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--timeout", type=int, default=120)
    parser.add_argument("command")
    parser.add_argument("rest", nargs="*")
    add_security_arguments(parser)
    args = parser.parse_args()
    SECURITY.update(confluent_security(args))
    deadline(args.timeout)
    commands = {
        "produce": produce,
        "open": open_transaction,
        "consume": consume,
        "watermarks": watermarks,
        "transform": transform,
        "bench": bench,
    }
    if args.command not in commands:
        fail(f"unknown command {args.command}")
    commands[args.command](args)


run(main)
