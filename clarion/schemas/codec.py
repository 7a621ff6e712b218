"""The orjson codec every clarion topic uses, and explicit decoding.

Agents consume raw bytes and decode here, instead of letting faust decode: faust logs
and drops a value it cannot decode, while clarion must send it to the DLQ with a reason.
"""

from __future__ import annotations

import types
import typing
from typing import Any, TypeVar

import faust
import orjson
from faust.serializers import codecs


class OrjsonCodec(codecs.Codec):
    """faust codec backed by orjson (compact UTF-8 JSON)."""

    def _dumps(self, obj: Any) -> bytes:
        return orjson.dumps(obj)

    def _loads(self, s: bytes) -> Any:
        return orjson.loads(s)


codecs.register("orjson", OrjsonCodec())

R = TypeVar("R", bound=faust.Record)


class PoisonMessage(ValueError):
    """A topic value that cannot become the record its topic promises."""


def encode(record: faust.Record) -> bytes:
    """Serialize a record to the bytes put on a topic."""
    return orjson.dumps(record.asdict())


def decode(model: type[R], raw: bytes | None) -> R:
    """Decode topic bytes into `model`, raising PoisonMessage with the reason."""
    if raw is None:
        raise PoisonMessage("empty value")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise PoisonMessage(f"undecodable: {exc}") from None
    if not isinstance(data, dict):
        raise PoisonMessage(f"undecodable: expected a JSON object, got {type(data).__name__}")
    data.pop("__faust", None)
    known = model._options.fields
    missing = [name for name in known if name not in data and name not in model._options.defaults]
    if missing:
        raise PoisonMessage(f"invalid: missing field(s) {', '.join(sorted(missing))}")
    wrong = [name for name, ftype in known.items() if name in data and not _conforms(data[name], ftype)]
    if wrong:
        raise PoisonMessage(f"invalid: wrong type for field(s) {', '.join(sorted(wrong))}")
    try:
        return model(**{k: v for k, v in data.items() if k in known})
    except (TypeError, ValueError) as exc:
        raise PoisonMessage(f"invalid: {exc}") from None


def _conforms(value: Any, ftype: Any) -> bool:
    """Shallow JSON type check of `value` against a record field annotation."""
    origin = typing.get_origin(ftype)
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, arg) for arg in typing.get_args(ftype))
    base = origin or ftype
    if base is type(None):
        return value is None
    if base is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if base is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if base in (str, list, dict, bool):
        return isinstance(value, base)
    return True
