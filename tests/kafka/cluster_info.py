"""What kafka-python's admin client says of the cluster: DescribeCluster and
DescribeLogDirs, as JSON lines.

  {"cluster": {...}}   describe_cluster(): cluster id, controller, brokers
  {"log_dirs": [...]}  describe_log_dirs(): per broker, its log directories with each
                       partition's size

usage: cluster_info.py --bootstrap HOST:PORT [--timeout S]
"""

import argparse

from common import deadline, emit, run


def plain(value):
    """JSON-friendly copy of what kafka-python returns (dicts, lists, tuples, named
    tuples, bytes)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if hasattr(value, "_asdict"):
        return plain(value._asdict())
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    return value


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--timeout", type=int, default=60)
    args = parser.parse_args()
    deadline(args.timeout)

    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=args.bootstrap, request_timeout_ms=15000)
    emit(cluster=plain(admin.describe_cluster()))
    emit(log_dirs=plain(admin.describe_log_dirs()))
    admin.close()


if __name__ == "__main__":
    run(main)
