#!/usr/bin/env python3
"""Produce JSON lines to Kafka as Confluent-framed Avro, as a user's own Python producer would.

confluent-kafka's AvroSerializer registers the schema with the Schema Registry under the topic's
value subject (TopicNameStrategy: `<topic>-value`) and frames each value as magic byte 0, the
schema id (big-endian int32), then the Avro binary. One record per input line; `bytes` and
`fixed` fields are given as base64 text. Prints a JSON summary on stdout when every record is
acknowledged:

    {"produced": 50, "subject": "orders-value", "schemaId": 3}

Run it with the venv from scripts/python-peer.sh:

    "$(scripts/python-peer.sh)" test/interop/produce_avro.py --brokers 127.0.0.1:9092 \\
        --registry http://127.0.0.1:8081/apis/ccompat/v7 --topic orders \\
        --schema order.avsc --input orders.jsonl --key-field id

--registry is the Confluent API's base URL (for Apicurio, .../apis/ccompat/v7).
"""

import argparse
import json
import pathlib
import sys

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from avro_json import JsonToAvro  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--brokers", required=True, help="bootstrap servers, host:port[,host:port]")
    parser.add_argument("--registry", required=True, help="Schema Registry URL (Confluent API)")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--schema", required=True, type=pathlib.Path, help="Avro schema (.avsc)")
    parser.add_argument("--input", required=True, type=pathlib.Path, help="one JSON record a line")
    parser.add_argument("--key-field", help="the field whose value, as UTF-8, is the record's key")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    schema_text = args.schema.read_text(encoding="utf-8")
    to_avro = JsonToAvro(json.loads(schema_text))

    registry = SchemaRegistryClient({"url": args.registry})
    # The defaults, spelled out: register the schema if new, under <topic>-value.
    serializer = AvroSerializer(registry, schema_text, conf={"auto.register.schemas": True})
    context = SerializationContext(args.topic, MessageField.VALUE)
    producer = Producer({"bootstrap.servers": args.brokers, "enable.idempotence": True})

    failures: list[str] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            failures.append(f"offset {msg.offset()}: {err}")

    produced = 0
    schema_id: int | None = None
    with args.input.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if line.strip() == "":
                continue
            try:
                record = to_avro.convert(json.loads(line))
                value = serializer(record, context)
            except Exception as err:  # noqa: BLE001 - any bad line stops the run, named
                print(f"{args.input}:{number}: {err}", file=sys.stderr)
                return 1
            if schema_id is None and value is not None:
                schema_id = int.from_bytes(value[1:5], "big")
            key = None
            if args.key_field is not None:
                if args.key_field not in record:
                    print(f"{args.input}:{number}: no field {args.key_field!r}", file=sys.stderr)
                    return 1
                key = str(record[args.key_field]).encode("utf-8")
            while True:
                try:
                    producer.produce(args.topic, key=key, value=value, on_delivery=on_delivery)
                    break
                except BufferError:
                    producer.poll(0.1)  # the local queue is full: let deliveries drain it
            producer.poll(0)
            produced += 1

    remaining = producer.flush(60)
    if remaining > 0:
        print(f"{remaining} of {produced} records not delivered within 60 s", file=sys.stderr)
        return 1
    if failures:
        print(f"{len(failures)} of {produced} records failed:", *failures[:10], sep="\n  ", file=sys.stderr)
        return 1
    summary = {"produced": produced, "subject": f"{args.topic}-value", "schemaId": schema_id}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KafkaException as err:
        print(f"kafka: {err}", file=sys.stderr)
        sys.exit(1)
