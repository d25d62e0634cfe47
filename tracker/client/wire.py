"""The packed metrics wire format: a batch of points as a few little-endian arrays instead of JSON numbers.

`POST /api/v1/runs/<id>/metrics` with `Content-Type: application/vnd.torchlight.points`
(idempotency key in the `Idempotency-Key` header). Body, little-endian, no padding::

    magic      4 bytes   b"TLP1"
    n_keys     uint32
    n_points   uint32
    keys       n_keys × (uint16 byte length, that many UTF-8 bytes)
    key_index  n_points × uint32    index into keys
    value      n_points × float64   NaN/±Inf are sent as IEEE values
    step       n_points × int64     -1 = none (the server assigns one past the key's highest step)
    timestamp  n_points × float64   unix seconds
    epoch      n_points × float64   NaN = no epoch

Encoding a batch is one struct.pack call per column (no per-point Python
code) where JSON cost microseconds per point under the training loop's
GIL; decoding is a memory copy per column. Standard library only (`struct` + `array`): the client
and the server both import this module.
"""

import array
import math
import struct
import sys

MAGIC = b"TLP1"
CONTENT_TYPE = "application/vnd.torchlight.points"
NO_STEP = -1
MAX_KEY_BYTES = 0xFFFF

_HEADER = struct.Struct("<4sII")
_KEY_LENGTH = struct.Struct("<H")
_NAN = math.nan
_SWAP = sys.byteorder != "little"  # arrays are native-endian; the wire is little-endian

for _code, _size in (("I", 4), ("q", 8), ("d", 8)):
    if array.array(_code).itemsize != _size:  # pragma: no cover - no such platform in use
        raise ImportError(f"tracker.client.wire needs array type {_code!r} of {_size} bytes")


class WireFormatError(ValueError):
    """A packed body that cannot be decoded; the message names what is wrong."""


class TooManyPoints(WireFormatError):
    """The header announces more points than the caller accepts (checked before decoding the arrays)."""

    def __init__(self, n_points, max_points):
        super().__init__(f"a batch holds at most {max_points} points (got {n_points})")
        self.n_points = n_points
        self.max_points = max_points


class PackedPoints:
    """A decoded batch: `keys` (list of str) and five parallel `array.array`s, one item per point.

    `step[i] == -1` means no step; `epoch[i]` NaN means no epoch.
    """

    __slots__ = ("keys", "key_index", "value", "step", "timestamp", "epoch")

    def __init__(self, keys, key_index, value, step, timestamp, epoch):
        self.keys = keys
        self.key_index = key_index
        self.value = value
        self.step = step
        self.timestamp = timestamp
        self.epoch = epoch

    def __len__(self):
        return len(self.key_index)

    def __repr__(self):
        return f"<PackedPoints {len(self)} points, {len(self.keys)} keys>"

    def points(self):
        """The points as (key, value, step_or_None, timestamp, epoch_or_None) tuples, in order."""
        keys = self.keys
        for ki, value, step, ts, epoch in zip(self.key_index, self.value, self.step, self.timestamp, self.epoch,
                                              strict=True):  # fmt: skip
            yield keys[ki], value, (None if step == NO_STEP else step), ts, (None if epoch != epoch else epoch)


def _pack_column(code, values):
    return struct.pack(f"<{len(values)}{code}", *values)


def _pack_optional(code, values, missing):
    """Pack a column where None means missing (`missing` stands in): one C-level pass when none is None."""
    nones = values.count(None)
    if nones == 0:
        return _pack_column(code, values)
    if nones == len(values):
        return struct.pack(f"<{code}", missing) * nones
    return _pack_column(code, [missing if v is None else v for v in values])


def encode_columns(keys, key_index, value, step, timestamp, epoch):
    """Pack a batch given as columns: `keys` (str) and five equally long lists, one item per point.

    `step` and `epoch` items may be None (no step, no epoch). This is the
    sender's fast path: each column is one struct.pack call, no per-point
    Python code. Raises ValueError for what the format cannot carry.
    """
    n = len(key_index)
    if not len(value) == len(step) == len(timestamp) == len(epoch) == n:
        raise ValueError("the five point columns must be equally long")
    parts = [_HEADER.pack(MAGIC, len(keys), n)]
    for key in keys:
        raw = key.encode("utf-8")
        if len(raw) > MAX_KEY_BYTES:
            raise ValueError(
                f"metric key is {len(raw)} bytes in UTF-8; the wire format carries at most {MAX_KEY_BYTES}"
            )
        parts.append(_KEY_LENGTH.pack(len(raw)))
        parts.append(raw)
    try:
        parts.append(_pack_column("I", key_index))
        parts.append(_pack_column("d", value))
    except struct.error as exc:
        raise ValueError(f"points must be (key, value, step, timestamp, epoch) with numbers: {exc}") from None
    try:
        parts.append(_pack_optional("q", step, NO_STEP))
    except struct.error as exc:
        raise ValueError(f"a step must be an integer that fits in int64: {exc}") from None
    try:
        parts.append(_pack_column("d", timestamp))
        parts.append(_pack_optional("d", epoch, _NAN))
    except struct.error as exc:
        raise ValueError(f"timestamps and epochs must be numbers: {exc}") from None
    return b"".join(parts)


def encode_points(points):
    """Pack (key, value, step_or_None, timestamp, epoch_or_None) tuples into one body.

    Raises ValueError for what the format cannot carry (a key over 65,535
    UTF-8 bytes, a step outside int64, a value that is not a number).
    """
    if not points:
        return _HEADER.pack(MAGIC, 0, 0)
    try:
        names, value, step, timestamp, epoch = (list(c) for c in zip(*points, strict=True))
    except ValueError:
        raise ValueError("points must be (key, value, step, timestamp, epoch) tuples") from None
    index = {key: i for i, key in enumerate(dict.fromkeys(names))}
    if not all(type(k) is str for k in index):
        raise ValueError("metric keys must be strings")
    return encode_columns(list(index), [index[k] for k in names], value, step, timestamp, epoch)


def _column(body, offset, code, count, name):
    end = offset + count * 8 if code != "I" else offset + count * 4
    if end > len(body):
        raise WireFormatError(f"the body is truncated in the {name} array (needs {end} bytes, has {len(body)})")
    column = array.array(code)
    column.frombytes(body[offset:end])
    if _SWAP:  # pragma: no cover - big-endian hosts
        column.byteswap()
    return column, end


def decode_points(body, max_points=None):
    """Decode a packed body into PackedPoints; raises WireFormatError naming what is malformed.

    `max_points`: refuse (TooManyPoints) a header announcing more points,
    before any array is decoded.
    """
    body = memoryview(body).cast("B") if not isinstance(body, bytes) else body
    if len(body) < _HEADER.size:
        raise WireFormatError(f"the body is {len(body)} bytes; a packed batch starts with a {_HEADER.size}-byte header")
    magic, n_keys, n_points = _HEADER.unpack_from(body, 0)
    if magic != MAGIC:
        raise WireFormatError(f"the body does not start with {MAGIC!r} (got {bytes(magic)!r})")
    if max_points is not None and n_points > max_points:
        raise TooManyPoints(n_points, max_points)
    # Each point takes 36 bytes and each key at least 2: refuse absurd counts before allocating anything.
    if _HEADER.size + n_keys * 2 + n_points * 36 > len(body):
        raise WireFormatError(
            f"the body is truncated: {n_keys} keys and {n_points} points need more than its {len(body)} bytes"
        )
    offset = _HEADER.size
    keys = []
    for i in range(n_keys):
        if offset + 2 > len(body):
            raise WireFormatError(f"the body is truncated in key {i}")
        (length,) = _KEY_LENGTH.unpack_from(body, offset)
        offset += 2
        if offset + length > len(body):
            raise WireFormatError(f"the body is truncated in key {i}")
        try:
            keys.append(str(body[offset : offset + length], "utf-8"))
        except UnicodeDecodeError as exc:
            raise WireFormatError(f"key {i} is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
        offset += length
    key_index, offset = _column(body, offset, "I", n_points, "key_index")
    value, offset = _column(body, offset, "d", n_points, "value")
    step, offset = _column(body, offset, "q", n_points, "step")
    timestamp, offset = _column(body, offset, "d", n_points, "timestamp")
    epoch, offset = _column(body, offset, "d", n_points, "epoch")
    if offset != len(body):
        raise WireFormatError(f"{len(body) - offset} trailing bytes after the last array")
    if n_points and max(key_index) >= n_keys:
        bad = next(i for i, k in enumerate(key_index) if k >= n_keys)
        raise WireFormatError(f"point {bad} has key_index {key_index[bad]}, but there are only {n_keys} keys")
    return PackedPoints(keys, key_index, value, step, timestamp, epoch)
