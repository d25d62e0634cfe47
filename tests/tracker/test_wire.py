"""The packed metrics wire format (tracker/client/wire.py): round trips and every malformed body."""

import math
import struct

import pytest

from tracker.client import wire
from tracker.client.wire import WireFormatError, decode_points, encode_points

POINTS = [
    ("train/loss", 0.25, 0, 1_700_000_000.5, None),
    ("acc", 0.9, 0, 1_700_000_000.5, 1.0),
    ("train/loss", math.nan, 1, 1_700_000_001.0, 2.5),
    ("déjà/vu ✓", math.inf, None, 1_700_000_002.0, None),
    ("acc", -math.inf, 2**63 - 1, 0.0, -1.0),
]


def header(n_keys, n_points):
    return struct.pack("<4sII", b"TLP1", n_keys, n_points)


def key(text):
    raw = text.encode()
    return struct.pack("<H", len(raw)) + raw


def arrays(key_index, value=0.0, step=0, ts=1.0, epoch=math.nan):
    n = len(key_index)
    return (struct.pack(f"<{n}I", *key_index) + struct.pack(f"<{n}d", *[value] * n) + struct.pack(f"<{n}q", *[step] * n)
            + struct.pack(f"<{n}d", *[ts] * n) + struct.pack(f"<{n}d", *[epoch] * n))  # fmt: skip


def same(a, b):
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def test_it_round_trips_points_with_nan_inf_missing_steps_and_epochs():
    packed = decode_points(encode_points(POINTS))
    assert len(packed) == 5
    assert packed.keys == ["train/loss", "acc", "déjà/vu ✓"]  # first-seen order, each once
    assert list(packed.key_index) == [0, 1, 0, 2, 1]
    assert list(packed.step) == [0, 0, 1, -1, 2**63 - 1]
    assert math.isnan(packed.epoch[0]) and packed.epoch[1] == 1.0
    decoded = list(packed.points())
    for got, sent in zip(decoded, POINTS, strict=True):
        assert all(same(g, s) for g, s in zip(got, sent, strict=True)), (got, sent)


def test_it_writes_exactly_the_documented_little_endian_layout():
    body = encode_points([("a", 1.5, 7, 2.0, None), ("bc", -1.0, None, 3.0, 4.0)])
    expected = (header(2, 2) + key("a") + key("bc") + struct.pack("<2I", 0, 1) + struct.pack("<2d", 1.5, -1.0)
                + struct.pack("<2q", 7, -1) + struct.pack("<2d", 2.0, 3.0))  # fmt: skip
    assert body[: len(expected)] == expected
    epochs = struct.unpack("<2d", body[len(expected) :])
    assert math.isnan(epochs[0]) and epochs[1] == 4.0
    assert len(body) == len(expected) + 16


def test_it_encodes_an_empty_batch_and_a_large_one():
    empty = decode_points(encode_points([]))
    assert empty.keys == [] and len(empty) == 0
    many = [(f"k{i % 7}", float(i), i, 1.0 + i, None) for i in range(20_000)]
    packed = decode_points(bytearray(encode_points(many)))
    assert len(packed) == 20_000 and len(packed.keys) == 7
    assert list(packed.points())[-1] == ("k0", 19_999.0, 19_999, 20_000.0, None)


def test_it_refuses_points_the_format_cannot_carry():
    with pytest.raises(ValueError, match="65535"):
        encode_points([("x" * 70_000, 1.0, 0, 1.0, None)])
    with pytest.raises(ValueError, match="int64"):
        encode_points([("a", 1.0, 2**63, 1.0, None)])
    with pytest.raises(ValueError, match="numbers"):
        encode_points([("a", "high", 0, 1.0, None)])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "header"),
        (b"TLP", "header"),
        (b"TLP2" + header(0, 0)[4:], "does not start with"),
        (b"JSON" + b"\x00" * 8, "does not start with"),
        (header(1, 0), "truncated"),  # a key announced, none there
        (header(1, 0) + struct.pack("<H", 10) + b"abc", "truncated in key 0"),
        (header(1, 1) + key("a") + arrays([0])[:-1], "truncated in the epoch array"),
        (header(1, 1) + key("a") + arrays([0])[:20], "truncated"),
        (header(1, 2) + key("a") + arrays([0]), "truncated"),
        (header(1, 1) + key("a") + arrays([0]) + b"\x00", "1 trailing bytes"),
        (header(1, 2) + key("a") + arrays([0, 1]), "point 1 has key_index 1, but there are only 1 keys"),
        (header(0, 1) + arrays([0]), "only 0 keys"),
        (header(1, 1) + struct.pack("<H", 2) + b"\xff\xfe" + arrays([0]), "key 0 is not valid UTF-8"),
        (header(0xFFFFFFFF, 0xFFFFFFFF) + b"\x00" * 64, "truncated"),  # absurd counts: refused before allocating
    ],
)
def test_it_refuses_a_malformed_body_naming_the_problem(body, message):
    with pytest.raises(WireFormatError, match=message):
        decode_points(body)


def test_it_refuses_more_points_than_the_caller_accepts_before_decoding():
    body = encode_points([("a", 1.0, i, 1.0, None) for i in range(11)])
    assert len(decode_points(body, max_points=11)) == 11
    with pytest.raises(wire.TooManyPoints, match="at most 10 points") as caught:
        decode_points(body, max_points=10)
    assert caught.value.n_points == 11 and isinstance(caught.value, WireFormatError)
    # The count check comes from the header alone, even when the arrays are missing.
    with pytest.raises(wire.TooManyPoints):
        decode_points(header(1, 50_001), max_points=50_000)


def test_it_names_its_content_type():
    assert wire.CONTENT_TYPE == "application/vnd.torchlight.points"


def test_it_packs_columns_as_the_sender_holds_them():
    body = wire.encode_columns(["a", "b"], [1, 0, 1], [1.0, 2.0, math.nan], [None, 4, 5], [9.0, 9.0, 9.5],
                               [None, 2.0, None])  # fmt: skip
    packed = decode_points(body)
    assert packed.keys == ["a", "b"] and list(packed.step) == [-1, 4, 5]
    points = list(packed.points())
    assert points[0] == ("b", 1.0, None, 9.0, None) and points[1] == ("a", 2.0, 4, 9.0, 2.0)
    assert math.isnan(points[2][1]) and points[2][4] is None
    with pytest.raises(ValueError, match="equally long"):
        wire.encode_columns(["a"], [0, 0], [1.0], [0, 1], [1.0, 1.0], [None, None])
