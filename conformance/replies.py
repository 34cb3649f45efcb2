"""Every reply of a target is checked before the runner uses it (README "What a target can and cannot do").

``interpret(command, message)`` turns a decoded reply (``conformance.channel``) into the
client's tuples, ``("ok", value)``, ``("not_applicable", why)`` or ``("raised", type, message,
traceback, mro_names)``, or raises ``BadReply``, which the runner records as that case's
``error``.  ``describe()`` is validated against ``TARGET_INFO_SCHEMA`` (built from
``protocol.OPTIONS`` and ``reference.dtypes.DTYPES``, so it cannot drift from them);
``read()`` must be a Snapshot of real numeric arrays; ``open``/``construct`` a session id;
``save`` a byte string.  Text from the target is cut to a bounded length with a note.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from came_conformance.capture import truncate
from came_conformance.protocol import OPTIONS, Snapshot, TargetInfo
from came_conformance.reference.dtypes import DTYPES

MESSAGE_CHARS = 8000  # of a target's exception or not-applicable message
TRACEBACK_CHARS = 16000
NAME_CHARS = 200
VARIANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$"
_names = {"type": "string", "minLength": 1, "maxLength": NAME_CHARS}
_explicit = {
    "name": _names,
    "profile": {"enum": ["paper", "mindformers"]},
    "api": {"enum": ["paper", "mindformers"]},
    "versions": {"type": "object", "maxProperties": 64, "propertyNames": {"maxLength": NAME_CHARS},
                 "additionalProperties": {"type": "string", "maxLength": NAME_CHARS}},
    "dtypes": {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"enum": list(DTYPES)}},
    "variants": {"type": "array", "minItems": 1, "maxItems": 64, "uniqueItems": True,
                 "items": {"type": "string", "pattern": VARIANT_PATTERN}},
    "options": {"type": "array", "uniqueItems": True, "items": {"enum": list(OPTIONS)}},
    "state_dtype": {"type": "object", "propertyNames": {"enum": list(DTYPES)},
                    "additionalProperties": {"enum": list(DTYPES)}},
    "precision": {"type": "object", "propertyNames": {"enum": list(DTYPES)},
                  "additionalProperties": {"type": "object", "maxProperties": 8,
                                           "propertyNames": {"enum": ["state", "compute", "scalars",
                                                                      "accumulate", "summation"]},
                                           "additionalProperties": {"type": "string", "maxLength": 40}}},
    "grad_dtypes": {"type": "object", "propertyNames": {"enum": list(DTYPES)},
                    "additionalProperties": {"type": "array", "uniqueItems": True, "items": {"enum": list(DTYPES)}}},
    "world_sizes": {"type": "array", "maxItems": 8, "uniqueItems": True,
                    "items": {"type": "integer", "minimum": 1, "maximum": 64}},
    "variant_options": {"type": "object", "maxProperties": 64, "propertyNames": {"pattern": VARIANT_PATTERN},
                        "additionalProperties": {"type": "array", "uniqueItems": True, "items": {"enum": list(OPTIONS)}}},
    "variant_dtypes": {"type": "object", "maxProperties": 64, "propertyNames": {"pattern": VARIANT_PATTERN},
                       "additionalProperties": {"type": "array", "minItems": 1, "uniqueItems": True,
                                                "items": {"enum": list(DTYPES)}}},
}
_fields = dataclasses.fields(TargetInfo)
#: describe() on the wire: TargetInfo's fields as JSON (lists for tuples and sets).  A field added
#: to TargetInfo without a rule here is accepted as any JSON value.
TARGET_INFO_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object", "additionalProperties": False,
    "required": [f.name for f in _fields if f.default is dataclasses.MISSING
                 and f.default_factory is dataclasses.MISSING],
    "properties": {f.name: _explicit.get(f.name, {}) for f in _fields},
}


class TargetFailure(Exception):
    """The worker died, did not answer in time, or broke the protocol (outcome ``error``)."""


class BadReply(TargetFailure):
    """A reply that is not what the protocol says ``command`` returns."""


def _text(value, what: str, limit: int, keep: str = "head") -> str:
    if not isinstance(value, str):
        raise BadReply(f"{what} is a {type(value).__name__}, not a string")
    return truncate(value, limit, keep)


def _where(error) -> str:
    return "/".join(str(p) for p in error.absolute_path) or "the top level"


def target_info(value) -> TargetInfo:
    """A describe() reply as a TargetInfo, or BadReply naming the first field that breaks the schema."""
    import jsonschema

    errors = sorted(jsonschema.Draft202012Validator(TARGET_INFO_SCHEMA).iter_errors(value),
                    key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        first = errors[0]
        raise BadReply(f"describe() returned an invalid TargetInfo: at {_where(first)}: "
                       f"{truncate(first.message, 300)}" + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""))
    fields = dict(value)
    for name in ("dtypes", "variants", "world_sizes"):
        if name in fields:
            fields[name] = tuple(fields[name])
    if "options" in fields:
        fields["options"] = frozenset(fields["options"])
    if "variant_options" in fields:
        fields["variant_options"] = {k: frozenset(v) for k, v in fields["variant_options"].items()}
    for name in ("variant_dtypes", "grad_dtypes"):
        if name in fields:
            fields[name] = {k: tuple(v) for k, v in fields[name].items()}
    return TargetInfo(**fields)


def _array(value, where: str) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise BadReply(f"read() returned {where} as a {type(value).__name__}, not an array")
    return value


def snapshot(value) -> Snapshot:
    """A read() reply as a Snapshot of arrays (their sizes and names are judged by the comparison)."""
    known = {f.name for f in dataclasses.fields(Snapshot)}
    if not isinstance(value, dict) or not {"params", "state"} <= set(value) <= known:
        raise BadReply(f"read() did not return a Snapshot ({', '.join(sorted(known))})")
    params, state, step = value["params"], value["state"], value.get("step")
    if not isinstance(params, list) or not isinstance(state, list):
        raise BadReply("read() returned params or state that is not a list")
    if step is not None and (not isinstance(step, int) or isinstance(step, bool)):
        raise BadReply(f"read() returned a step counter of type {type(step).__name__}, not an int or None")
    out_state = []
    for i, tensors in enumerate(state):
        if not isinstance(tensors, dict):
            raise BadReply(f"read() returned state[{i}] as a {type(tensors).__name__}, not a dict of arrays")
        for name in tensors:
            if len(name) > NAME_CHARS:
                raise BadReply(f"read() returned state[{i}] with a name of {len(name)} characters")
        out_state.append({k: _array(v, f"state[{i}][{k!r}]") for k, v in tensors.items()})
    extra = {k: v for k, v in value.items() if k not in ("params", "state", "step")}  # fields added later
    return Snapshot([_array(p, f"params[{i}]") for i, p in enumerate(params)], out_state, step, **extra)


def _session_id(command: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BadReply(f"{command}() reply is not a session id: {type(value).__name__}")
    return value


def _checkpoint(value) -> bytes:
    if not isinstance(value, bytes):
        raise BadReply(f"save() returned a {type(value).__name__}, not bytes")
    return value


def _shards(value) -> list[dict]:
    """A sharded rank's own pieces (conformance.distributed): per parameter, a dict of arrays."""
    if not isinstance(value, list) or not all(isinstance(p, dict) for p in value):
        raise BadReply(f"shards() returned a {type(value).__name__}, not a list of dicts of arrays")
    return [{_text(k, "a shard's name", NAME_CHARS): _array(v, f"shards()[{i}][{k!r}]") for k, v in p.items()}
            for i, p in enumerate(value)]


_VALUES = {"describe": target_info, "read": snapshot, "save": _checkpoint, "shards": _shards,
           "open": lambda v: _session_id("open", v), "construct": lambda v: _session_id("construct", v)}


def raised(message: dict) -> tuple:
    mro = message.get("mro")
    if not isinstance(mro, list) or not mro or len(mro) > 64 or not all(isinstance(m, str) for m in mro):
        raise BadReply("a 'raised' reply without the exception's class names")
    return ("raised", _text(message.get("type"), "the exception type", NAME_CHARS),
            _text(message.get("message"), "the exception message", MESSAGE_CHARS),
            _text(message.get("traceback"), "the traceback", TRACEBACK_CHARS, keep="tail"),
            [truncate(m, NAME_CHARS) for m in mro])


def interpret(command: str, message: dict) -> tuple:
    """The client's tuple for one reply to ``command``; BadReply if the reply is not one."""
    status = message.get("status")
    if status == "ok":
        check = _VALUES.get(command)
        return ("ok", check(message.get("value")) if check else message.get("value"))
    if status == "not_applicable":
        return ("not_applicable", _text(message.get("message"), "the not-applicable reason", MESSAGE_CHARS))
    if status == "raised":
        return raised(message)
    if status == "unsendable":
        raise BadReply(_text(message.get("message"), "the worker's note", MESSAGE_CHARS))
    raise BadReply(f"a reply with status {truncate(str(status), 40)!r}")
