"""JSON <-> Avro values for the reference peer's scripts (produce_avro.py, consume_avro.py).

JSON has no bytes: the peer writes Avro `bytes` and `fixed` values as base64 text, and reads
them back from base64 text where the schema says bytes or fixed. Everything else maps as
fastavro expects (records as objects, arrays, maps, unions by value).
"""

import base64
import datetime
import decimal
import json
import uuid
from typing import Any

PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
COMPLEX = {"record", "error", "enum", "fixed", "array", "map"}


def to_json_line(value: Any) -> str:
    """One decoded record as one line of JSON; bytes as base64, logical types as text."""
    return json.dumps(value, default=_json_default, ensure_ascii=False, separators=(",", ":"))


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


class JsonToAvro:
    """Turns a JSON value into what fastavro writes for a schema: base64 text becomes bytes."""

    def __init__(self, schema: Any) -> None:
        self._named: dict[str, Any] = {}
        self._schema = schema
        self._collect(schema, None)

    def convert(self, value: Any) -> Any:
        return self._convert(self._schema, value)

    def _collect(self, schema: Any, namespace: str | None) -> None:
        """Records every named type (record, enum, fixed) by its name and full name."""
        if isinstance(schema, list):
            for branch in schema:
                self._collect(branch, namespace)
        elif isinstance(schema, dict):
            kind = schema.get("type")
            if kind in ("record", "error", "enum", "fixed") and "name" in schema:
                name = schema["name"]
                space = schema.get("namespace", namespace)
                full = name if "." in name or not space else f"{space}.{name}"
                self._named[full] = schema
                self._named.setdefault(name.rsplit(".", 1)[-1], schema)
                namespace = full.rsplit(".", 1)[0] if "." in full else None
            if kind in ("record", "error"):
                for field in schema.get("fields", []):
                    self._collect(field["type"], namespace)
            elif kind == "array":
                self._collect(schema["items"], namespace)
            elif kind == "map":
                self._collect(schema["values"], namespace)
            elif isinstance(kind, (dict, list)):
                self._collect(kind, namespace)

    def _resolve(self, schema: Any) -> Any:
        """A primitive's name, a complex type's dict, or a union's list; named references followed."""
        if isinstance(schema, str):
            return schema if schema in PRIMITIVES else self._named.get(schema, schema)
        if isinstance(schema, dict):
            kind = schema["type"]
            # A logical type (decimal, uuid...) keeps its dict: fastavro wants its own value for it.
            if (isinstance(kind, str) and kind in COMPLEX) or "logicalType" in schema:
                return schema
            return self._resolve(kind)
        return schema

    def _convert(self, schema: Any, value: Any) -> Any:
        schema = self._resolve(schema)
        if isinstance(schema, list):
            return self._convert_union(schema, value)
        if schema == "bytes" and isinstance(value, str):
            return base64.b64decode(value, validate=True)
        if isinstance(schema, dict):
            kind = schema["type"]
            if kind == "fixed" and isinstance(value, str):
                return base64.b64decode(value, validate=True)
            if kind in ("record", "error") and isinstance(value, dict):
                out = dict(value)
                for field in schema.get("fields", []):
                    if field["name"] in out:
                        out[field["name"]] = self._convert(field["type"], out[field["name"]])
                return out
            if kind == "array" and isinstance(value, list):
                return [self._convert(schema["items"], item) for item in value]
            if kind == "map" and isinstance(value, dict):
                return {k: self._convert(schema["values"], v) for k, v in value.items()}
        return value

    def _convert_union(self, branches: list[Any], value: Any) -> Any:
        if value is None:
            return None
        resolved = [self._resolve(branch) for branch in branches]
        # JSON text is a string when the union has one; base64 bytes only otherwise.
        if isinstance(value, str) and "string" not in resolved:
            for branch in resolved:
                if branch == "bytes" or (isinstance(branch, dict) and branch["type"] == "fixed"):
                    return self._convert(branch, value)
        if isinstance(value, dict):
            for branch in resolved:
                if isinstance(branch, dict) and branch["type"] in ("record", "error", "map"):
                    return self._convert(branch, value)
        if isinstance(value, list):
            for branch in resolved:
                if isinstance(branch, dict) and branch["type"] == "array":
                    return self._convert(branch, value)
        return value
