"""A group's committed offsets through kafka-python's admin client: lists them, deletes
those of the given partitions (OffsetDelete), and lists them again.

  {"before": {"TOPIC-P": offset, ...}}
  {"deleted": {"TOPIC-P": "error name or null", ...}}
  {"after": {"TOPIC-P": offset, ...}}

usage: group_offsets.py --bootstrap HOST:PORT --group G --delete TOPIC:P [TOPIC:P...]
"""

import argparse

from common import deadline, emit, run


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--delete", nargs="+", required=True)
    parser.add_argument("--timeout", type=int, default=60)
    args = parser.parse_args()
    deadline(args.timeout)

    from kafka import TopicPartition
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=args.bootstrap, request_timeout_ms=15000)

    def listed():
        offsets = admin.list_group_offsets(args.group).get(args.group, {})
        return {f"{tp.topic}-{tp.partition}": meta.offset for tp, meta in offsets.items()}

    emit(before=listed())
    partitions = [TopicPartition(t, int(p)) for t, p in (spec.rsplit(":", 1) for spec in args.delete)]
    result = admin.delete_group_offsets(args.group, partitions)
    deleted = {}
    for tp, error in result.items():
        name = getattr(error, "__name__", None) or (type(error).__name__ if error is not None else None)
        deleted[f"{tp.topic}-{tp.partition}"] = None if error is None or name == "NoError" else name
    emit(deleted=deleted)
    emit(after=listed())
    admin.close()


if __name__ == "__main__":
    run(main)
