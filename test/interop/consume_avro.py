#!/usr/bin/env python3
"""Consume Confluent-framed Avro from Kafka as a user's own Python consumer would.

Reads the topic from the beginning with a consumer group, decodes each value with
confluent-kafka's AvroDeserializer (the writer schema fetched by the id in the frame from the
Schema Registry), and writes each record as one JSON line on stdout (`bytes` and `fixed` as
base64). Exits 0 once --count records are read, 1 with a message on stderr if --timeout seconds
pass first or a value does not decode.

    "$(scripts/python-peer.sh)" test/interop/consume_avro.py --brokers 127.0.0.1:9092 \\
        --registry http://127.0.0.1:8081/apis/ccompat/v7 --topic orders \\
        --count 50 --timeout 30 --group orders-check

--registry is the Confluent API's base URL (for Apicurio, .../apis/ccompat/v7).
"""

import argparse
import pathlib
import sys
import time

from confluent_kafka import Consumer, KafkaError, KafkaException
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from avro_json import to_json_line  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--brokers", required=True, help="bootstrap servers, host:port[,host:port]")
    parser.add_argument("--registry", required=True, help="Schema Registry URL (Confluent API)")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--count", required=True, type=int, help="stop after this many records")
    parser.add_argument("--timeout", required=True, type=float, help="seconds to wait in all")
    parser.add_argument("--group", required=True, help="consumer group id")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    registry = SchemaRegistryClient({"url": args.registry})
    deserializer = AvroDeserializer(registry)
    consumer = Consumer(
        {
            "bootstrap.servers": args.brokers,
            "group.id": args.group,
            "auto.offset.reset": "earliest",
            # Transactional producers' aborted records are not results.
            "isolation.level": "read_committed",
        }
    )
    deadline = time.monotonic() + args.timeout
    read = 0
    try:
        consumer.subscribe([args.topic])
        while read < args.count:
            left = deadline - time.monotonic()
            if left <= 0:
                print(
                    f"timed out after {args.timeout:g} s: read {read} of {args.count} records from {args.topic}",
                    file=sys.stderr,
                )
                return 1
            msg = consumer.poll(min(left, 0.5))
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise KafkaException(err)
                # Transient (the topic's leader moving, a partition's end): keep polling.
                if err.code() != KafkaError._PARTITION_EOF:
                    print(f"kafka: {err}", file=sys.stderr)
                continue
            try:
                record = deserializer(msg.value(), SerializationContext(msg.topic(), MessageField.VALUE))
            except Exception as decode_err:  # noqa: BLE001 - named, then the run stops
                print(
                    f"{msg.topic()}[{msg.partition()}]@{msg.offset()}: cannot decode: {decode_err}",
                    file=sys.stderr,
                )
                return 1
            sys.stdout.write(to_json_line(record) + "\n")
            read += 1
        sys.stdout.flush()
        return 0
    finally:
        consumer.close()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KafkaException as err:
        print(f"kafka: {err}", file=sys.stderr)
        sys.exit(1)
