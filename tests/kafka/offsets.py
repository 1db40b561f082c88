"""Commits and reads a consumer group's committed offsets through Kafka's OffsetCommit
and OffsetFetch.

With --commit P=O,... it first commits those offsets of --topic for --group as a member
of the group: a kafka-python KafkaConsumer subscribes, waits for its assignment, commits,
and leaves. Then it reads the group's committed offsets of --topic's partitions 0 ..
--partitions - 1 twice and prints one line per client and partition:
{"client": "kafka-python" | "confluent", "partition", "offset"} (offset null: nothing
committed). kafka-python reads them with KafkaAdminClient.list_group_offsets, confluent-kafka
with Consumer.committed (without joining the group).

usage: offsets.py --bootstrap HOST:PORT --group G --topic T --partitions N
                  [--commit P=O[,P=O...]] [--timeout S]
"""

import argparse

from common import deadline, emit, fail, run


def commit_as_member(args, offsets):
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    consumer = KafkaConsumer(
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
    )
    consumer.subscribe([args.topic])
    while not consumer.assignment():  # joins the group; bounded by the deadline
        consumer.poll(timeout_ms=200, max_records=1)
    consumer.commit({TopicPartition(args.topic, p): OffsetAndMetadata(o, "", -1) for p, o in offsets.items()})
    consumer.close(autocommit=False)


def read_kafka_python(args):
    from kafka import KafkaAdminClient, TopicPartition

    admin = KafkaAdminClient(bootstrap_servers=args.bootstrap)
    partitions = [TopicPartition(args.topic, p) for p in range(args.partitions)]
    committed = admin.list_group_offsets({args.group: partitions})[args.group]
    admin.close()
    by_partition = {tp.partition: meta.offset for tp, meta in committed.items() if tp.topic == args.topic}
    for p in range(args.partitions):
        offset = by_partition.get(p)
        emit(client="kafka-python", partition=p, offset=None if offset is None or offset < 0 else offset)


def read_confluent(args):
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": args.bootstrap, "group.id": args.group, "enable.auto.commit": False})
    partitions = consumer.committed([TopicPartition(args.topic, p) for p in range(args.partitions)], timeout=10)
    consumer.close()
    for tp in partitions:
        if tp.error is not None:
            fail(f"committed offset of {tp.topic}-{tp.partition}: {tp.error}")
        emit(client="confluent", partition=tp.partition, offset=None if tp.offset < 0 else tp.offset)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--partitions", type=int, required=True)
    parser.add_argument("--commit")
    parser.add_argument("--timeout", type=int, default=60)
    args = parser.parse_args()
    deadline(args.timeout)
    if args.commit:
        offsets = {int(p): int(o) for p, o in (item.split("=") for item in args.commit.split(","))}
        commit_as_member(args, offsets)
    read_kafka_python(args)
    read_confluent(args)


if __name__ == "__main__":
    run(main)
