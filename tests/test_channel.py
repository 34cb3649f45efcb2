"""The worker channel's wire format (conformance/channel.py): data only, every size checked first."""
from __future__ import annotations

import json
import math
import os
import threading
import time

import numpy as np
import pytest

from came_conformance import channel
from came_conformance.replies import BadReply, interpret


def roundtrip(message: dict, max_payload: int = channel.DEFAULT_MAX_PAYLOAD_BYTES) -> dict:
    r, w = os.pipe()
    try:
        chunks = channel.pack(message)
        writer = threading.Thread(target=channel.write_chunks, args=(w, chunks))
        writer.start()
        got = channel.receive(r, time.monotonic() + 60, max_payload)
        writer.join()
        return got
    finally:
        os.close(r)
        os.close(w)


def raw_frame(header: dict, payload: bytes = b"", header_size=None, payload_size=None, magic=channel.MAGIC) -> bytes:
    text = json.dumps(header).encode()
    return channel.PREFIX.pack(magic, channel.VERSION, 0, len(text) if header_size is None else header_size,
                               len(payload) if payload_size is None else payload_size) + text + payload


def receive_bytes(data: bytes, max_payload: int = channel.DEFAULT_MAX_PAYLOAD_BYTES) -> dict:
    r, w = os.pipe()
    try:
        os.write(w, data)
        os.close(w)
        w = None
        return channel.receive(r, time.monotonic() + 30, max_payload)
    finally:
        os.close(r)
        if w is not None:
            os.close(w)


def test_every_value_kind_crosses_exactly():
    value = {"none": None, "flags": [True, False], "int": 2 ** 70, "float": 0.1, "nan": math.nan, "inf": -math.inf,
             "text": "é\x00", "tuple": (1, (2.5, "x")), "blob": b"\x00\xffcheckpoint",
             "dollar": {"$": "not a tag", "$param": [2, 3]}, "scalar": np.float32(1.5),
             "arrays": [np.arange(12, dtype=np.float64).reshape(3, 4), np.array(-0.0), np.zeros((0, 3)),
                        np.arange(5, dtype=">i4"), np.ones((2, 2), np.float16).T, np.arange(3, dtype=np.uint8)]}
    got = roundtrip({"id": 1, "value": value})["value"]
    assert got["none"] is None and got["flags"] == [True, False] and got["int"] == 2 ** 70 and got["float"] == 0.1
    assert math.isnan(got["nan"]) and got["inf"] == -math.inf and got["text"] == "é\x00"
    assert got["tuple"] == (1, (2.5, "x")) and got["blob"] == b"\x00\xffcheckpoint"
    assert got["dollar"] == {"$": "not a tag", "$param": [2, 3]} and got["scalar"] == 1.5
    for a, b in zip(value["arrays"], got["arrays"]):
        assert b.shape == a.shape and b.dtype == a.dtype.newbyteorder("<") and np.array_equal(a, b)
        assert np.signbit(b).tolist() == np.signbit(a).tolist()


def test_text_that_no_utf_8_file_can_hold_arrives_replaced():
    got = roundtrip({"id": 1, "message": "bad \udc80 byte", "\udcff": 1})
    assert got["message"] == "bad ? byte" and got["?"] == 1


@pytest.mark.parametrize("value", [object(), {1: "int key"}, np.array(["text"]), np.array([1 + 2j]),
                                   np.array([True]), np.array([object()]), {"s": {1, 2}}])
def test_what_is_not_data_does_not_cross(value):
    with pytest.raises(channel.ChannelError, match="cannot cross"):
        channel.pack({"value": value})


def test_a_payload_larger_than_the_limit_is_refused_before_it_is_read():
    frame = raw_frame({"buffers": [], "message": {}}, payload_size=1 << 40)
    with pytest.raises(channel.ChannelError, match="exceeds the limit"):
        receive_bytes(frame)  # 1 TiB declared, nothing sent: refused on the prefix alone


def test_an_array_whose_shape_disagrees_with_its_buffer_is_refused_before_allocation():
    header = {"buffers": [[0, 8]], "message": {"value": {"$": "nd", "dtype": "float64", "shape": [1 << 30, 1 << 30],
                                                         "buffer": 0}}}
    with pytest.raises(channel.ChannelError, match="needs"):
        receive_bytes(raw_frame(header, b"\0" * 8))


@pytest.mark.parametrize("header, words", [
    ({"buffers": [[0, 8]], "message": {"v": {"$": "nd", "dtype": "object", "shape": [1], "buffer": 0}}}, "dtype"),
    ({"buffers": [[0, 8]], "message": {"v": {"$": "nd", "dtype": "float64", "shape": [-1], "buffer": 0}}}, "shape"),
    ({"buffers": [[0, 8]], "message": {"v": {"$": "nd", "dtype": "float64", "shape": [1], "buffer": 3}}}, "buffer"),
    ({"buffers": [[4, 8]], "message": {}}, "outside the payload"),
    ({"buffers": [[0, 8], [4, 4]], "message": {}}, "overlaps"),
    ({"buffers": [], "message": {"v": {"$": "pickle", "data": "gASV"}}}, "unknown tag"),
    ({"buffers": [], "message": {"v": {"$": "float", "value": "1e999"}}}, "non-finite"),
    ({"message": {}}, "buffers, message"),
])
def test_a_malformed_header_is_a_channel_error(header, words):
    with pytest.raises(channel.ChannelError, match=words):
        receive_bytes(raw_frame(header, b"\0" * 8))


def test_bad_prefixes_and_torn_frames():
    with pytest.raises(channel.ChannelError, match="not a frame"):
        receive_bytes(raw_frame({"buffers": [], "message": {}}, magic=b"\x80\x04\x95\x00"))  # a pickle's start
    with pytest.raises(channel.ChannelError, match="header of"):
        receive_bytes(raw_frame({"buffers": [], "message": {}}, header_size=channel.MAX_HEADER_BYTES + 1))
    with pytest.raises(channel.ChannelError, match="inside a frame"):
        receive_bytes(raw_frame({"buffers": [[0, 8]], "message": {}}, b"\0" * 8)[:-3])
    with pytest.raises(channel.Closed):
        receive_bytes(b"")
    with pytest.raises(channel.ChannelError, match="strict"):
        receive_bytes(channel.PREFIX.pack(channel.MAGIC, channel.VERSION, 0, 3, 0) + b"NaN")
    deep = {"buffers": [], "message": {"v": json.loads("[" * 200 + "]" * 200)}}
    with pytest.raises(channel.ChannelError, match="deeper"):
        receive_bytes(raw_frame(deep))


def test_a_read_waits_no_longer_than_its_deadline():
    r, w = os.pipe()
    try:
        os.write(w, raw_frame({"buffers": [], "message": {}})[:5])
        with pytest.raises(channel.Timeout):
            channel.receive(r, time.monotonic() + 0.2)
    finally:
        os.close(r)
        os.close(w)


def test_a_write_to_a_reader_that_never_reads_stops_at_its_deadline():
    r, w = os.pipe()
    try:
        os.set_blocking(w, False)
        with pytest.raises(channel.Timeout):
            channel.write_chunks(w, [bytes(8 << 20)], time.monotonic() + 0.5)
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.parametrize("message, words", [
    ({"status": "ok", "value": None}, "did not return a Snapshot"),
    ({"status": "ok", "value": {"params": [np.zeros(2)], "state": [{}], "step": True}}, "step counter"),
    ({"status": "ok", "value": {"params": ["x"], "state": [{}], "step": 1}}, "not an array"),
    ({"status": "raised", "type": "ValueError", "message": "m", "traceback": "t", "mro": "ValueError"},
     "class names"),
    ({"status": "done"}, "status"),
])
def test_replies_outside_the_protocol_are_bad_replies(message, words):
    with pytest.raises(BadReply, match=words):
        interpret("read", message)


def test_describe_is_checked_against_the_schema():
    good = {"name": "t", "profile": "paper", "api": "paper", "versions": {"x": "1"}, "dtypes": ["float32"],
            "variants": ["default"], "options": ["groups"], "state_dtype": {}}
    info = interpret("describe", {"status": "ok", "value": good})[1]
    assert info.dtypes == ("float32",) and info.options == frozenset({"groups"})
    for field, bad in [("variants", ["a b"]), ("options", ["teleport"]), ("state_dtype", {"float8": "float32"}),
                       ("versions", {"x": 1}), ("name", "")]:
        with pytest.raises(BadReply, match=field):
            interpret("describe", {"status": "ok", "value": {**good, field: bad}})

