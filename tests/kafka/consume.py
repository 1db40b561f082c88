"""Consumes --max records of one topic through confluent-kafka (librdkafka) or
kafka-python and prints each (see common.emit_record), then exits.

Without --group it assigns itself every partition of the topic from the beginning. With
--group G it subscribes as a member of consumer group G (auto commit off, starting at the
committed offsets, or the beginning where there are none) and commits each record's
offset + 1 synchronously right after printing it, so what it printed is exactly what it
committed; it leaves the group before exiting.

It fails if no record comes for --idle-ms before it has read --max records. With
--client-rack (confluent only) it names its rack (client.rack), so that leaders may send
it to fetch from a replica in that rack (KIP-392).

usage: consume.py --client confluent|kafka-python --bootstrap HOST:PORT --topic T --max N
                  [--group G] [--idle-ms MS] [--timeout S] [--client-rack RACK]
                  [--tls-ca FILE [--tls-cert FILE --tls-key FILE]]
                  [--sasl-mechanism M --sasl-user U --sasl-password P]
"""

import argparse
import time

from common import add_security_arguments, confluent_security, deadline, emit_record, fail, kafka_python_security, run

SESSION_TIMEOUT_MS = 6000
HEARTBEAT_INTERVAL_MS = 500


class Idle:
    """Fails the script when no record came for `idle_ms`."""

    def __init__(self, args):
        self.args = args
        self.last = time.monotonic()
        self.read = 0

    def record(self):
        self.last = time.monotonic()
        self.read += 1

    def check(self):
        if time.monotonic() - self.last > self.args.idle_ms / 1000:
            fail(f"read {self.read} of {self.args.max} records, then none for {self.args.idle_ms} ms")


def consume_confluent(args):
    from confluent_kafka import (
        OFFSET_BEGINNING,
        TIMESTAMP_CREATE_TIME,
        TIMESTAMP_LOG_APPEND_TIME,
        Consumer,
        KafkaError,
        TopicPartition,
    )

    config = {
        "bootstrap.servers": args.bootstrap,
        # librdkafka wants a group id even for assign(); without --group nothing joins it
        # or commits to it.
        "group.id": args.group or "consume-py-assign",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": SESSION_TIMEOUT_MS,
        "heartbeat.interval.ms": HEARTBEAT_INTERVAL_MS,
        **confluent_security(args),
    }
    if args.client_rack:
        # KIP-392: the partitions' leaders may send it to a replica in this rack.
        config["client.rack"] = args.client_rack
    consumer = Consumer(config)
    if args.group:
        consumer.subscribe([args.topic])
    else:
        topic = consumer.list_topics(args.topic, timeout=10).topics[args.topic]
        if topic.error is not None:
            fail(f"metadata of {args.topic}: {topic.error}")
        consumer.assign([TopicPartition(args.topic, p, OFFSET_BEGINNING) for p in sorted(topic.partitions)])
    idle = Idle(args)
    while idle.read < args.max:
        msg = consumer.poll(0.2)
        if msg is None:
            idle.check()
            continue
        if msg.error() is not None:
            if msg.error().code() == KafkaError._PARTITION_EOF:
                continue
            fail(f"consuming: {msg.error()}")
        timestamp_type, timestamp = msg.timestamp()
        timestamp_type = {TIMESTAMP_CREATE_TIME: "CreateTime", TIMESTAMP_LOG_APPEND_TIME: "LogAppendTime"}.get(
            timestamp_type, "none"
        )
        emit_record(msg.partition(), msg.offset(), timestamp_type, timestamp, msg.key(), msg.value(), msg.headers())
        idle.record()
        if args.group:
            consumer.commit(message=msg, asynchronous=False)
    consumer.close()


def consume_kafka_python(args):
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    consumer = KafkaConsumer(
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
        request_timeout_ms=10_000,
        **kafka_python_security(args),
    )
    if args.group:
        consumer.subscribe([args.topic])
    else:
        partitions = consumer.partitions_for_topic(args.topic)
        if not partitions:
            fail(f"no partitions of {args.topic} in the metadata")
        assigned = [TopicPartition(args.topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
    idle = Idle(args)
    while idle.read < args.max:
        # One record per poll: a commit after each covers exactly what was printed.
        polled = consumer.poll(timeout_ms=200, max_records=1)
        if not polled:
            idle.check()
            continue
        for tp, records in polled.items():
            for r in records:
                timestamp_type = ["CreateTime", "LogAppendTime"][r.timestamp_type]
                emit_record(r.partition, r.offset, timestamp_type, r.timestamp, r.key, r.value, r.headers)
                idle.record()
                if args.group:
                    consumer.commit({tp: OffsetAndMetadata(r.offset + 1, "", -1)})
    consumer.close(autocommit=False)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--client", choices=["confluent", "kafka-python"], required=True)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--max", type=int, required=True)
    parser.add_argument("--group")
    parser.add_argument("--idle-ms", type=int, default=15_000)
    parser.add_argument("--client-rack")
    parser.add_argument("--timeout", type=int, default=60)
    add_security_arguments(parser)
    args = parser.parse_args()
    deadline(args.timeout)
    if args.client == "confluent":
        consume_confluent(args)
    else:
        consume_kafka_python(args)


if __name__ == "__main__":
    run(main)
