"""What the Kafka client scripts here share: a hard deadline, JSON-lines output, and
records as JSON (bytes as lowercase hex, null for none).

tests/tests/kafka.rs runs these scripts as processes (python3 SCRIPT ARGS...); each
prints its results as one JSON object per line on stdout, and exits non-zero with a
message on stderr when it cannot do what it was asked.
"""

import json
import os
import signal
import sys
import traceback


def fail(message):
    """Exits with status 1 after printing `message` to stderr. os._exit: a client that
    was not closed cannot hold the interpreter's shutdown up."""
    sys.stdout.flush()
    print(f"{os.path.basename(sys.argv[0])}: {message}", file=sys.stderr, flush=True)
    os._exit(1)


def run(main):
    """Runs `main`; an exception fails the script with its traceback."""
    try:
        main()
    except Exception:  # everything unexpected is a failure, reported as such
        fail(f"failed:\n{traceback.format_exc()}")


def deadline(seconds):
    """Fails the script if it still runs `seconds` from now."""

    def expired(_signum, _frame):
        fail(f"still running after {seconds} s")

    signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)


def add_security_arguments(parser):
    """--tls-ca FILE: connect over TLS (security.protocol SSL) trusting the CAs in FILE
    (PEM), the node's name checked against its certificate; --tls-cert and --tls-key:
    the client's own certificate and key (PEM), for nodes that ask for one.
    --sasl-mechanism M (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512) with --sasl-user and
    --sasl-password: log in with SASL (SASL_SSL with --tls-ca, else SASL_PLAINTEXT)."""
    parser.add_argument("--tls-ca")
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--sasl-mechanism")
    parser.add_argument("--sasl-user")
    parser.add_argument("--sasl-password")


def security_protocol(args):
    """Kafka's security.protocol for the arguments."""
    if args.sasl_mechanism:
        return "SASL_SSL" if args.tls_ca else "SASL_PLAINTEXT"
    return "SSL" if args.tls_ca else "PLAINTEXT"


def confluent_security(args):
    """librdkafka's settings for the --tls-* and --sasl-* arguments."""
    config = {"security.protocol": security_protocol(args).lower()}
    if args.tls_ca:
        config["ssl.ca.location"] = args.tls_ca
    if args.tls_cert:
        config.update({"ssl.certificate.location": args.tls_cert, "ssl.key.location": args.tls_key})
    if args.sasl_mechanism:
        config.update(
            {"sasl.mechanism": args.sasl_mechanism, "sasl.username": args.sasl_user, "sasl.password": args.sasl_password}
        )
    return config


def kafka_python_security(args):
    """kafka-python's settings for the --tls-* and --sasl-* arguments."""
    config = {"security_protocol": security_protocol(args)}
    if args.tls_ca:
        config.update({"ssl_cafile": args.tls_ca, "ssl_check_hostname": True})
    if args.tls_cert:
        config.update({"ssl_certfile": args.tls_cert, "ssl_keyfile": args.tls_key})
    if args.sasl_mechanism:
        config.update(
            {
                "sasl_mechanism": args.sasl_mechanism,
                "sasl_plain_username": args.sasl_user,
                "sasl_plain_password": args.sasl_password,
            }
        )
    return config


def emit(**fields):
    """Prints one JSON line."""
    print(json.dumps(fields), flush=True)


def to_hex(data):
    return None if data is None else bytes(data).hex()


def from_hex(text):
    return None if text is None else bytes.fromhex(text)


def read_specs():
    """The records to produce, one JSON object per line of stdin: partition (or null for
    the client's partitioner), key, value, headers ([name, value] pairs), timestamp (ms,
    or null for now)."""
    specs = []
    for line in sys.stdin:
        if line.strip():
            spec = json.loads(line)
            specs.append(
                {
                    "partition": spec.get("partition"),
                    "key": from_hex(spec.get("key")),
                    "value": from_hex(spec.get("value")),
                    "headers": [(name, from_hex(value)) for name, value in spec.get("headers") or []],
                    "timestamp": spec.get("timestamp"),
                }
            )
    return specs


def emit_record(partition, offset, timestamp_type, timestamp, key, value, headers):
    """Prints a consumed record; `timestamp_type` is "CreateTime" or "LogAppendTime",
    `headers` a list of (name, value) pairs."""
    emit(
        partition=partition,
        offset=offset,
        timestamp_type=timestamp_type,
        timestamp=timestamp,
        key=to_hex(key),
        value=to_hex(value),
        headers=[[name, to_hex(value)] for name, value in headers or []],
    )
