"""The worker channel's wire format: data only, so a target's bytes can never run code here.

One frame is

    prefix   20 bytes: b"CAME", version (u16), 0 (u16), header size (u32), payload size (u64),
                       little-endian
    header   UTF-8 JSON: {"buffers": [[offset, size], ...], "message": <encoded value>}
    payload  raw little-endian buffers at those offsets (64-byte aligned by the sender)

A message is a dict of fields (``id``, ``command``, ``args``, ``status``, ``value``, ...): new
fields need no format change.  Values are encoded as JSON plus one-key-``$`` tags:
``{"$": "nd", "dtype": "float64", "shape": [2, 3], "buffer": 0}`` (an array of a real numeric
dtype, its bytes in the payload), ``{"$": "bytes", "buffer": 1}`` (an opaque byte string, such
as a target's checkpoint), ``{"$": "tuple", "items": [...]}``, ``{"$": "float", "value": "nan"}``
(non-finite floats; the JSON is strict) and ``{"$": "dict", "items": [[key, value], ...]}`` (a
dict that has a ``"$"`` key of its own).  Nothing else decodes: no classes, no pickle.

The reader checks before it allocates: the magic and version, the header size (at most
``MAX_HEADER_BYTES``), the payload size (at most the caller's limit), the buffer table (in
order, inside the payload, not overlapping) and every array's dtype, shape and byte count
against its buffer.  Anything else is a ``ChannelError``.  Reads and writes take a deadline
(``time.monotonic()`` seconds) and wait with ``select``, so a signal interrupts them at once.
"""
from __future__ import annotations

import json
import math
import os
import select
import struct
import time

import numpy as np

MAGIC = b"CAME"
VERSION = 1
PREFIX = struct.Struct("<4sHHIQ")
MAX_HEADER_BYTES = 8 << 20  # JSON fields: messages and tracebacks are truncated well below this
DEFAULT_MAX_PAYLOAD_BYTES = 1 << 30  # a 4096 x 4096 float64 parameter with its state fits four times
ALIGN = 64
MAX_DEPTH = 64  # nesting of lists and dicts in one message
MAX_NDIM = 32
#: The array dtypes the channel carries (real numbers only: no bool, complex, object, string).
DTYPES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64",
          "uint8", "uint16", "uint32", "uint64")
_IOV_MAX = 512
_F_SETPIPE_SZ = 1031  # Linux
PIPE_BYTES = 1 << 20  # Linux's default limit for an unprivileged process
_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


class ChannelError(Exception):
    """A frame or value outside the format above (the sender broke the channel)."""


class Closed(ChannelError):
    """End of stream at a frame boundary: the other side closed the channel or died."""


class Timeout(ChannelError):
    """The deadline passed before a whole frame was read or written."""


# --------------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------------
def _array_bytes(a: np.ndarray) -> memoryview:
    return memoryview(a.reshape(-1).view(np.uint8))


def _to_wire_array(a: np.ndarray) -> np.ndarray:
    name = a.dtype.name
    if a.dtype.kind not in "iuf" or name not in DTYPES:
        raise ChannelError(f"an array of dtype {a.dtype} cannot cross the channel (real numeric dtypes only: "
                           f"{', '.join(DTYPES)})")
    if a.ndim > MAX_NDIM:
        raise ChannelError(f"an array of {a.ndim} dimensions cannot cross the channel (at most {MAX_NDIM})")
    return np.asarray(a, dtype=a.dtype.newbyteorder("<"), order="C")  # keeps 0-D arrays 0-D


def encode(value, buffers: list, depth: int = 0):
    """``value`` as a JSON-able tree; array and byte-string contents are appended to ``buffers``."""
    if depth > MAX_DEPTH:
        raise ChannelError(f"a value nested deeper than {MAX_DEPTH} levels cannot cross the channel")
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else {"$": "float", "value": repr(float(value))}
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        return encode(value.item(), buffers, depth)
    if isinstance(value, (bytes, bytearray, memoryview)):
        buffers.append(memoryview(value).cast("B"))
        return {"$": "bytes", "buffer": len(buffers) - 1}
    if isinstance(value, list):
        return [encode(v, buffers, depth + 1) for v in value]
    if isinstance(value, tuple):
        return {"$": "tuple", "items": [encode(v, buffers, depth + 1) for v in value]}
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise ChannelError("a dict with keys other than strings cannot cross the channel")
        if "$" in value:
            return {"$": "dict", "items": [[k, encode(v, buffers, depth + 1)] for k, v in value.items()]}
        return {k: encode(v, buffers, depth + 1) for k, v in value.items()}
    if isinstance(value, np.ndarray) or hasattr(value, "__array__"):
        a = _to_wire_array(np.asarray(value))
        buffers.append(_array_bytes(a))
        return {"$": "nd", "dtype": a.dtype.name, "shape": list(a.shape), "buffer": len(buffers) - 1}
    raise ChannelError(f"a {type(value).__name__} cannot cross the channel (data only: None, bool, int, float, "
                       f"str, list, tuple, dict, bytes, real numeric arrays)")


def _shape(spec) -> tuple[int, ...]:
    shape = spec.get("shape")
    if not isinstance(shape, list) or len(shape) > MAX_NDIM or \
            not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
        raise ChannelError(f"array shape {str(shape)[:80]} is not a list of at most {MAX_NDIM} sizes")
    return tuple(shape)


def _buffer(spec, table) -> tuple[int, int]:
    index = spec.get("buffer")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(table):
        raise ChannelError(f"buffer index {str(index)[:40]} is not in the frame's buffer table")
    return table[index]


def _text(s: str) -> str:
    """``s`` as valid Unicode: JSON may carry lone surrogates, which no UTF-8 report file can hold."""
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "replace").decode("utf-8")


def decode(tree, table, payload, depth: int = 0):
    """The value of an encoded ``tree``; with ``payload=None`` only check it (sizes before allocation)."""
    if depth > MAX_DEPTH:
        raise ChannelError(f"value nested deeper than {MAX_DEPTH} levels")
    if isinstance(tree, str):
        return _text(tree)
    if tree is None or isinstance(tree, (bool, int, float)):
        return tree
    if isinstance(tree, list):
        return [decode(v, table, payload, depth + 1) for v in tree]
    if not isinstance(tree, dict):
        raise ChannelError(f"unexpected JSON value {type(tree).__name__}")
    if "$" not in tree:
        return {_text(k): decode(v, table, payload, depth + 1) for k, v in tree.items()}
    tag = tree["$"]
    if tag == "nd":
        dtype, shape = tree.get("dtype"), _shape(tree)
        if dtype not in DTYPES:
            raise ChannelError(f"array dtype {str(dtype)[:40]!r} is not one of {', '.join(DTYPES)}")
        offset, size = _buffer(tree, table)
        itemsize = np.dtype(dtype).itemsize
        if math.prod(shape) * itemsize != size:
            raise ChannelError(f"array of shape {list(shape)} and dtype {dtype} needs "
                               f"{math.prod(shape) * itemsize} bytes, its buffer has {size}")
        if payload is None:
            return None
        if size == 0:
            return np.zeros(shape, dtype=dtype)
        return np.frombuffer(payload, dtype=np.dtype(dtype).newbyteorder("<"), count=size // itemsize,
                             offset=offset).reshape(shape)
    if tag == "bytes":
        offset, size = _buffer(tree, table)
        return None if payload is None else bytes(payload[offset:offset + size])
    if tag == "tuple":
        items = tree.get("items")
        if not isinstance(items, list):
            raise ChannelError("tuple without items")
        return tuple(decode(v, table, payload, depth + 1) for v in items)
    if tag == "float":
        if tree.get("value") not in _NON_FINITE:
            raise ChannelError(f"non-finite float {str(tree.get('value'))[:20]!r}")
        return _NON_FINITE[tree["value"]]
    if tag == "dict":
        items = tree.get("items")
        if not isinstance(items, list) or not all(isinstance(p, list) and len(p) == 2 and isinstance(p[0], str)
                                                  for p in items):
            raise ChannelError("dict tag without [key, value] items")
        return {_text(k): decode(v, table, payload, depth + 1) for k, v in items}
    raise ChannelError(f"unknown tag {str(tag)[:40]!r}")


# --------------------------------------------------------------------------------------------
# Frames
# --------------------------------------------------------------------------------------------
def pack(message: dict) -> list:
    """The chunks of one frame (prefix, header, padded buffers); raises ChannelError before any I/O."""
    buffers: list[memoryview] = []
    body = encode(message, buffers)
    table, chunks, offset = [], [], 0
    for buf in buffers:
        pad = -offset % ALIGN
        if pad:
            chunks.append(bytes(pad))
            offset += pad
        table.append([offset, buf.nbytes])
        chunks.append(buf)
        offset += buf.nbytes
    header = json.dumps({"buffers": table, "message": body}, allow_nan=False, separators=(",", ":")).encode()
    if len(header) > MAX_HEADER_BYTES:
        raise ChannelError(f"message header of {len(header)} bytes exceeds {MAX_HEADER_BYTES}")
    return [PREFIX.pack(MAGIC, VERSION, 0, len(header), offset), header, *chunks]


def enlarge_pipe(fd: int) -> None:
    """Give a pipe PIPE_BYTES of buffer where the system allows it (fewer system calls per array)."""
    import fcntl

    try:
        fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_BYTES)
    except OSError:
        pass  # the default pipe size only costs speed


def _wait(fd: int, deadline: float | None, write: bool) -> None:
    if deadline is None:
        return
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise Timeout("deadline passed")
    ready = select.select([], [fd], [], remaining) if write else select.select([fd], [], [], remaining)
    if not (ready[1] if write else ready[0]):
        raise Timeout("deadline passed")


def write_chunks(fd: int, chunks: list, deadline: float | None = None) -> None:
    """Write every chunk; on a non-blocking ``fd`` each write waits for room until ``deadline``."""
    views = [memoryview(c).cast("B") for c in chunks if len(c)]
    while views:
        _wait(fd, deadline, write=True)
        try:
            n = os.writev(fd, views[:_IOV_MAX])
        except BlockingIOError:
            continue
        while n and views:
            if n >= views[0].nbytes:
                n -= views[0].nbytes
                views.pop(0)
            else:
                views[0] = views[0][n:]
                n = 0


def send(fd: int, message: dict, deadline: float | None = None) -> None:
    write_chunks(fd, pack(message), deadline)


def _read_into(fd: int, view: memoryview, deadline: float | None, at_boundary: bool) -> None:
    got = 0
    while got < view.nbytes:
        _wait(fd, deadline, write=False)
        try:
            n = os.readv(fd, [view[got:]])
        except BlockingIOError:
            continue
        if n == 0:
            if at_boundary and got == 0:
                raise Closed("end of stream")
            raise ChannelError(f"end of stream inside a frame ({got} of {view.nbytes} bytes)")
        got += n


def _strict_constant(name: str):
    raise ChannelError(f"non-strict JSON constant {name}")


def receive(fd: int, deadline: float | None = None, max_payload: int = DEFAULT_MAX_PAYLOAD_BYTES) -> dict:
    """Read one frame and return its message; every size is checked before it is allocated."""
    prefix = bytearray(PREFIX.size)
    _read_into(fd, memoryview(prefix), deadline, at_boundary=True)
    magic, version, _, header_size, payload_size = PREFIX.unpack(prefix)
    if magic != MAGIC:
        raise ChannelError(f"not a frame (starts with {bytes(prefix[:8])!r})")
    if version != VERSION:
        raise ChannelError(f"frame version {version}, this runner speaks {VERSION}")
    if header_size > MAX_HEADER_BYTES:
        raise ChannelError(f"header of {header_size} bytes exceeds the limit of {MAX_HEADER_BYTES}")
    if payload_size > max_payload:
        raise ChannelError(f"payload of {payload_size} bytes exceeds the limit of {max_payload}")
    header = bytearray(header_size)
    _read_into(fd, memoryview(header), deadline, at_boundary=False)
    try:
        doc = json.loads(header.decode("utf-8"), parse_constant=_strict_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ChannelError(f"header is not strict UTF-8 JSON: {str(exc)[:200]}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("message"), dict) or not isinstance(doc.get("buffers"), list):
        raise ChannelError("header is not {buffers, message}")
    table, end = [], 0
    for entry in doc["buffers"]:
        if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(x, int) and not isinstance(x, bool)
                                                                    for x in entry)):
            raise ChannelError("buffer table entry is not [offset, size]")
        offset, size = entry
        if offset < end or size < 0 or offset + size > payload_size:
            raise ChannelError(f"buffer [{offset}, {size}] overlaps another or lies outside the payload "
                               f"of {payload_size} bytes")
        table.append((offset, size))
        end = offset + size
    decode(doc["message"], table, None)  # every array's size against its buffer, before allocating
    payload = bytearray(payload_size)
    _read_into(fd, memoryview(payload), deadline, at_boundary=False)
    return decode(doc["message"], table, payload)
