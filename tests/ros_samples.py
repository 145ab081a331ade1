"""Deterministic, fully populated instances of any ROS 2 message type, by introspection.

Every field gets a value that depends on its path and on a seed, so two processes that fill
the same type with the same seed build equal messages, and a value that lands in the wrong
field is caught. Floats are multiples of 1/4 so that float32 fields round-trip exactly.
"""

from __future__ import annotations

import importlib
import zlib

from rosidl_parser.definition import (
    AbstractNestedType,
    AbstractString,
    AbstractWString,
    Array,
    BasicType,
    NamespacedType,
)

SEQUENCE_LENGTH = 3

_INT_RANGES = {
    "int8": (-128, 127),
    "uint8": (0, 255),
    "char": (0, 255),
    "octet": (0, 255),
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}


def message_class(namespaced: NamespacedType):
    module = importlib.import_module(".".join(namespaced.namespaces))
    return getattr(module, namespaced.name)


def _code(path: str, seed: int) -> int:
    return zlib.crc32(f"{seed}:{path}".encode())


def _basic(typename: str, path: str, seed: int):
    code = _code(path, seed)
    if typename in ("float", "double"):
        return (code % 4001 - 2000) / 4.0
    if typename == "boolean":
        return bool(code & 1)
    if typename == "octet":
        return bytes([code % 256])
    low, high = _INT_RANGES[typename]
    return low + code % min(high - low + 1, 2**31)


def _value(slot_type, path: str, seed: int):
    if isinstance(slot_type, BasicType):
        return _basic(slot_type.typename, path, seed)
    if isinstance(slot_type, (AbstractString, AbstractWString)):
        return f"{path}#{_code(path, seed) % 1000}"
    if isinstance(slot_type, NamespacedType):
        return fill(message_class(slot_type), seed, path)
    if isinstance(slot_type, AbstractNestedType):
        length = slot_type.size if isinstance(slot_type, Array) else SEQUENCE_LENGTH
        items = [_value(slot_type.value_type, f"{path}[{i}]", seed) for i in range(length)]
        if isinstance(slot_type.value_type, BasicType) and slot_type.value_type.typename == "octet":
            return b"".join(items)
        return items
    raise TypeError(f"unsupported field type {slot_type!r} at {path}")


def fill(msg_class, seed: int = 0, path: str = ""):
    """An instance of ``msg_class`` with every field (recursively) set."""
    msg = msg_class()
    for (name, _), slot_type in zip(msg_class.get_fields_and_field_types().items(), msg_class.SLOT_TYPES):
        setattr(msg, name, _value(slot_type, f"{path}.{name}" if path else name, seed))
    return msg


def rotvla_message_types():
    import rotvla_msgs.msg as msgs

    return {name: getattr(msgs, name) for name in ("ActionChunk", "ExecutorStatus", "Observation", "StageTiming")}


def rotvla_service_types():
    import rotvla_msgs.srv as srvs

    return {name: getattr(srvs, name) for name in ("LoadCheckpoint", "SetInstruction", "StartEpisode", "StopEpisode")}
