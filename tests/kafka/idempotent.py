"""An idempotent confluent-kafka (librdkafka) producer with acks=all that keeps producing
numbered values ("PREFIX-N", N from 0, partition N % PARTITIONS; PREFIX "value") until
STOP_FILE exists or COUNT were produced, then flushes. Prints, as they happen, one line
per acknowledged record {"partition", "offset", "value"} (value as text), one per failed delivery
{"error", "code", "fatal", "delivery": true}, one per client error reported through
error_cb {"error", "code", "fatal", "delivery": false} (librdkafka reports a refused
connection to a killed broker there), and at the end {"done": true, "produced", "unflushed"}.

usage: idempotent.py --bootstrap HOST:PORT --topic T --partitions P
                     (--stop-file PATH | --count N) [--prefix PREFIX]
                     [--rate RECORDS_PER_S] [--timeout S]
"""

import argparse
import os
import time

from common import deadline, emit, run


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--partitions", type=int, required=True)
    parser.add_argument("--stop-file")
    parser.add_argument("--count", type=int)
    parser.add_argument("--prefix", default="value")
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--timeout", type=int, default=600)
    args = parser.parse_args()
    if (args.stop_file is None) == (args.count is None):
        parser.error("give one of --stop-file and --count")
    deadline(args.timeout)

    from confluent_kafka import Producer

    def on_error(err):
        emit(error=str(err), code=err.name(), fatal=err.fatal(), delivery=False)

    producer = Producer(
        {
            "bootstrap.servers": args.bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "message.timeout.ms": 300_000,
            "request.timeout.ms": 5_000,
            "retry.backoff.ms": 100,
            "error_cb": on_error,
            # RDKAFKA_DEBUG (e.g. "eos,msg") turns on librdkafka's debug log on stderr.
            **({"debug": os.environ["RDKAFKA_DEBUG"]} if os.environ.get("RDKAFKA_DEBUG") else {}),
        }
    )

    def report(err, msg):
        if err is not None:
            emit(error=f"delivery of {msg.value().decode()}: {err}", code=err.name(), fatal=err.fatal(), delivery=True)
        else:
            emit(partition=msg.partition(), offset=msg.offset(), value=msg.value().decode())

    produced = 0
    started = time.monotonic()
    def more():
        if args.count is not None:
            return produced < args.count
        return not os.path.exists(args.stop_file)

    while more():
        # Keep to the rate: the test is about failover, not load.
        ahead = produced / args.rate - (time.monotonic() - started)
        if ahead > 0:
            producer.poll(ahead)
            continue
        value = f"{args.prefix}-{produced}".encode()
        try:
            producer.produce(args.topic, value=value, partition=produced % args.partitions, on_delivery=report)
            produced += 1
        except BufferError:
            pass
        producer.poll(0)
    unflushed = producer.flush(args.timeout / 2)
    emit(done=True, produced=produced, unflushed=unflushed)


run(main)
