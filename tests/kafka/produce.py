"""Produces the records given on stdin (see common.read_specs) to one topic with acks=all,
through confluent-kafka (librdkafka) or kafka-python, and prints one line per record, in
input order, once every record is acknowledged: {"partition", "offset", "timestamp"}.

usage: produce.py --client confluent|kafka-python --bootstrap HOST:PORT --topic T
                  [--compression none|gzip|snappy|lz4|zstd] [--timeout S]
                  [--tls-ca FILE [--tls-cert FILE --tls-key FILE]]
                  [--sasl-mechanism M --sasl-user U --sasl-password P]
"""

import argparse

from common import add_security_arguments, confluent_security, deadline, emit, fail, kafka_python_security, read_specs, run


def produce_confluent(args, specs):
    from confluent_kafka import Producer

    producer = Producer(
        {
            "bootstrap.servers": args.bootstrap,
            "acks": "all",
            "compression.type": args.compression,
            "linger.ms": 5,
            "message.timeout.ms": args.timeout * 1000 // 2,
            **confluent_security(args),
        }
    )
    reports = [None] * len(specs)

    def reporter(i):
        def report(err, msg):
            reports[i] = (err, msg)

        return report

    for i, spec in enumerate(specs):
        options = {"key": spec["key"], "value": spec["value"], "headers": spec["headers"], "on_delivery": reporter(i)}
        if spec["partition"] is not None:
            options["partition"] = spec["partition"]
        if spec["timestamp"] is not None:
            options["timestamp"] = spec["timestamp"]
        while True:
            try:
                producer.produce(args.topic, **options)
                break
            except BufferError:  # the local queue is full: serve delivery reports
                producer.poll(0.1)
    left = producer.flush(args.timeout / 2)
    if left:
        fail(f"{left} records were not acknowledged in {args.timeout / 2} s")
    for i, (err, msg) in enumerate(reports):
        if err is not None:
            fail(f"record {i} failed: {err}")
        emit(partition=msg.partition(), offset=msg.offset(), timestamp=msg.timestamp()[1])


def produce_kafka_python(args, specs):
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=args.bootstrap,
        acks="all",
        compression_type=None if args.compression == "none" else args.compression,
        linger_ms=5,
        request_timeout_ms=10_000,
        max_block_ms=args.timeout * 1000 // 2,
        **kafka_python_security(args),
    )
    futures = []
    for spec in specs:
        futures.append(
            producer.send(
                args.topic,
                key=spec["key"],
                value=spec["value"],
                headers=spec["headers"],
                partition=spec["partition"],
                timestamp_ms=spec["timestamp"],
            )
        )
    producer.flush(timeout=args.timeout / 2)
    for i, future in enumerate(futures):
        try:
            stored = future.get(timeout=1)
        except Exception as e:  # the record's failure, whatever it is
            fail(f"record {i} failed: {e!r}")
        emit(partition=stored.partition, offset=stored.offset, timestamp=stored.timestamp)
    producer.close(timeout=5)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--client", choices=["confluent", "kafka-python"], required=True)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--compression", default="none")
    parser.add_argument("--timeout", type=int, default=60)
    add_security_arguments(parser)
    args = parser.parse_args()
    deadline(args.timeout)
    specs = read_specs()
    if args.client == "confluent":
        produce_confluent(args, specs)
    else:
        produce_kafka_python(args, specs)


if __name__ == "__main__":
    run(main)
