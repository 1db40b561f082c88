"""Partition reassignment through kafka-python's KafkaAdminClient (AlterPartitionReassignments
and ListPartitionReassignments, KIP-455), as kafka-reassign-partitions.sh drives them; one
command per run, each printing its outcome as JSON lines. An error the controller answers
with is a result (printed by its Kafka name, e.g. "NoReassignmentInProgressError"); no
answer is a failure.

usage: reassign.py --bootstrap HOST:PORT[,HOST:PORT...] COMMAND ...
  move TOPIC:PARTITION=ID,ID,... ...   start moves (TOPIC:PARTITION=- cancels one's move)
                                       {"topic", "partition", "error"} per partition
  list [TOPIC:PARTITION...]            the moves in progress (none named: all)
                                       {"topic", "partition", "replicas", "adding",
                                       "removing"} per partition
"""

import argparse

from common import deadline, emit, run

REQUEST_TIMEOUT_MS = 15000


def partition_of(text):
    topic, partition = text.rsplit(":", 1)
    return topic, int(partition)


def move(admin, items):
    from kafka import TopicPartition

    reassignments = {}
    for item in items:
        where, replicas = item.split("=", 1)
        topic, partition = partition_of(where)
        target = None if replicas == "-" else [int(n) for n in replicas.split(",")]
        reassignments[TopicPartition(topic, partition)] = target
    results = admin.alter_partition_reassignments(reassignments, timeout_ms=REQUEST_TIMEOUT_MS)
    for tp, error in sorted(results.items()):
        emit(topic=tp.topic, partition=tp.partition, error=None if error is None else error.__name__)


def list_moves(admin, items):
    from kafka import TopicPartition

    asked = [TopicPartition(*partition_of(item)) for item in items] if items else None
    for tp, moving in sorted(admin.list_partition_reassignments(asked, timeout_ms=REQUEST_TIMEOUT_MS).items()):
        emit(
            topic=tp.topic,
            partition=tp.partition,
            replicas=moving["replicas"],
            adding=moving["adding_replicas"],
            removing=moving["removing_replicas"],
        )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("command", choices=["move", "list"])
    parser.add_argument("rest", nargs="*")
    args = parser.parse_args()
    deadline(60)
    import time

    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaConnectionError

    # Metadata lists a node that is down (as Redpanda does; see README's Metadata row), and
    # kafka-python's admin may send its controller lookup there and fail on the refused
    # connection instead of trying another node: a user's script tries again, as this one
    # does (within the deadline). Moves are idempotent.
    while True:
        admin = KafkaAdminClient(bootstrap_servers=args.bootstrap.split(","), request_timeout_ms=REQUEST_TIMEOUT_MS)
        try:
            if args.command == "move":
                move(admin, args.rest)
            else:
                list_moves(admin, args.rest)
            return
        except KafkaConnectionError:
            time.sleep(0.5)
        finally:
            admin.close()


if __name__ == "__main__":
    run(main)
