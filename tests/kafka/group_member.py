"""One member of a consumer group through confluent-kafka (librdkafka), for tests that
move the group's coordinator under it.

It subscribes to --topic in --group (auto commit off, starting at the committed offsets
or the beginning), reads records until it has seen --count distinct values, committing
each record's offset + 1 synchronously after printing it, and sleeps --delay-ms after
each record so the test has time to act. It prints one JSON line per event:
  {"assigned": [partitions], "member_id": ...}   a rebalance gave it partitions
  {"revoked": [partitions]}                      a rebalance took them
  {"partition": p, "offset": o, "value": v}      a record (value as text)
  {"commit_error": "..."}                        a commit failed (the record was printed)
  {"error": "..."}                               an error event of the consumer
  {"done": n, "member_id": ...}                  it read n distinct values; it closes

With --instance-id it is a static member (group.instance.id, KIP-345). With --protocol
consumer it runs Kafka's consumer group protocol (group.protocol=consumer, KIP-848: the
coordinator assigns) instead of the classic one.

usage: group_member.py --bootstrap HOSTS --topic T --group G --count N
                       [--delay-ms MS] [--instance-id ID] [--protocol classic|consumer]
                       [--timeout S]
"""

import argparse
import os
import time

from common import deadline, emit, run


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--delay-ms", type=int, default=0)
    parser.add_argument("--instance-id")
    parser.add_argument("--protocol", choices=["classic", "consumer"], default="classic")
    parser.add_argument("--timeout", type=int, default=120)
    args = parser.parse_args()
    deadline(args.timeout)

    from confluent_kafka import Consumer, KafkaException

    consumer = None

    def assigned(_consumer, partitions):
        emit(assigned=[p.partition for p in partitions], member_id=consumer.memberid())

    def revoked(_consumer, partitions):
        emit(revoked=[p.partition for p in partitions])

    config = {
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 500,
        "error_cb": lambda e: emit(error=str(e)),
    }
    if args.instance_id:
        config["group.instance.id"] = args.instance_id
    if os.environ.get("SLUICE_RDKAFKA_DEBUG"):
        # librdkafka's debug contexts (e.g. "cgrp,protocol"), logged to stderr.
        config["debug"] = os.environ["SLUICE_RDKAFKA_DEBUG"]
    if args.protocol == "consumer":
        # The coordinator sets the session and heartbeat timing of KIP-848 members.
        del config["session.timeout.ms"]
        del config["heartbeat.interval.ms"]
        config["group.protocol"] = "consumer"
    consumer = Consumer(config)
    consumer.subscribe([args.topic], on_assign=assigned, on_revoke=revoked)
    seen = set()
    while len(seen) < args.count:
        message = consumer.poll(0.2)
        if message is None:
            continue
        if message.error():
            emit(error=str(message.error()))
            continue
        value = message.value().decode()
        seen.add(value)
        emit(partition=message.partition(), offset=message.offset(), value=value)
        try:
            consumer.commit(message=message, asynchronous=False)
        except KafkaException as e:
            emit(commit_error=str(e))
        if args.delay_ms:
            time.sleep(args.delay_ms / 1000)
    emit(done=len(seen), member_id=consumer.memberid())
    consumer.close()


if __name__ == "__main__":
    run(main)
