"""JSON on every clarion topic, and explicit decoding that names what is wrong.

Agents consume raw bytes and decode here instead of letting faust decode: faust logs
and drops a value it cannot decode, while clarion must send it to the DLQ with a reason.

Batchable topics (requests, lanes, retries, outcomes) carry either one JSON object or a
JSON array of them, all keyed to the same partition: one Kafka record, and so one faust
event, can carry many notifications. `decode_batch` returns the good items and, for each
bad one, its own bytes and the reason, so one poison item never costs its neighbours.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar

import msgspec

R = TypeVar("R", bound=msgspec.Struct)

_encoder = msgspec.json.Encoder()
_any = msgspec.json.Decoder()
_raw_items = msgspec.json.Decoder(list[msgspec.Raw])


class PoisonMessage(ValueError):
    """A topic value that cannot become the record its topic promises."""


@dataclass(frozen=True)
class Poison:
    """One undecodable value (or batch item): its bytes and why it was refused."""

    raw: bytes
    reason: str


def encode(record: msgspec.Struct | Any) -> bytes:
    """Serialize a record (or plain JSON data) to the bytes put on a topic."""
    return _encoder.encode(record)


def encode_batch(encoded_items: Iterable[bytes]) -> bytes:
    """A JSON array from items that are already encoded."""
    return b"[" + b",".join(encoded_items) + b"]"


@cache
def _decoder(model: type[R]) -> msgspec.json.Decoder:
    return msgspec.json.Decoder(model)


@cache
def _batch_decoder(model: type[R]) -> msgspec.json.Decoder:
    return msgspec.json.Decoder(model | list[model])  # type: ignore[operator,valid-type]


def decode(model: type[R], raw: bytes | None) -> R:
    """Decode one record, raising PoisonMessage with the reason."""
    if raw is None:
        raise PoisonMessage("empty value")
    try:
        return _decoder(model).decode(raw)
    except msgspec.ValidationError as exc:
        raise PoisonMessage(f"invalid: {exc}") from None
    except msgspec.DecodeError as exc:
        raise PoisonMessage(f"undecodable: {exc}") from None


def decode_batch(model: type[R], raw: bytes | None) -> tuple[list[R], list[Poison]]:
    """Decode a record or an array of records; bad items come back as Poison."""
    if raw is None:
        return [], [Poison(b"", "empty value")]
    try:
        value = _batch_decoder(model).decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return _decode_each(model, raw)
    return ([value] if isinstance(value, msgspec.Struct) else value), []


def _decode_each(model: type[R], raw: bytes) -> tuple[list[R], list[Poison]]:
    """The slow path: find which items of a batch are bad, and why."""
    try:
        data = _any.decode(raw)
    except msgspec.DecodeError as exc:
        return [], [Poison(raw, f"undecodable: {exc}")]
    if isinstance(data, dict):
        return [], [Poison(raw, f"invalid: {_reason(model, raw)}")]
    if not isinstance(data, list):
        return [], [Poison(raw, f"undecodable: expected a JSON object or array, got {type(data).__name__}")]
    good: list[R] = []
    bad: list[Poison] = []
    for item in _raw_items.decode(raw):
        item_bytes = bytes(item)
        try:
            good.append(_decoder(model).decode(item_bytes))
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            bad.append(Poison(item_bytes, f"invalid: {exc}"))
    return good, bad


def _reason(model: type[R], raw: bytes) -> str:
    try:
        _decoder(model).decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return str(exc)
    return "unknown"
