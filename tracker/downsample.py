"""Min/max bucket aggregation and downsampling of metric series (pure: no ORM, no request).

A bucket aggregate ("agg") is a list of 14 numbers describing a run of points:

    [count, nonfinite_count,
     min_step, min_value, min_timestamp, min_epoch,
     max_step, max_value, max_timestamp, max_epoch,
     nf_step, nf_value, nf_timestamp, nf_epoch]

min/max consider finite values only (min_step None: no finite value); nf_* is
the non-finite (NaN/±Inf) point with the lowest step (nf_step None: none).
Ties break towards the lower step, so merging is order-independent and a
chart answer is the same on every refresh.

A point is a tuple (step, value, timestamp, epoch); value may be NaN or ±Inf.
"""

import math

COUNT, NONFINITE, MIN_STEP, MIN_VALUE, MIN_TS, MIN_EPOCH, MAX_STEP, MAX_VALUE, MAX_TS, MAX_EPOCH = range(10)
NF_STEP, NF_VALUE, NF_TS, NF_EPOCH = range(10, 14)
AGG_WIDTH = 14

_isfinite = math.isfinite


def empty_agg():
    return [0, 0, None, None, None, None, None, None, None, None, None, None, None, None]


def add_point(agg, step, value, ts, epoch):
    """Fold one point into `agg` in place."""
    agg[COUNT] += 1
    if _isfinite(value):
        if agg[MIN_STEP] is None:
            agg[2:10] = (step, value, ts, epoch, step, value, ts, epoch)
            return
        mv = agg[MIN_VALUE]
        if value < mv or (value == mv and step < agg[MIN_STEP]):
            agg[2:6] = (step, value, ts, epoch)
        mv = agg[MAX_VALUE]
        if value > mv or (value == mv and step < agg[MAX_STEP]):
            agg[6:10] = (step, value, ts, epoch)
    else:
        agg[NONFINITE] += 1
        if agg[NF_STEP] is None or step < agg[NF_STEP]:
            agg[10:14] = (step, value, ts, epoch)


def aggregate(points, shift):
    """{bucket id: agg} for points bucketed by `step >> shift`."""
    if len(points) >= 512:
        fast = _aggregate_numpy(points, shift)
        if fast is not None:
            return fast
    out = {}
    for step, value, ts, epoch in points:
        b = step >> shift
        agg = out.get(b)
        if agg is None:
            agg = out[b] = empty_agg()
        add_point(agg, step, value, ts, epoch)
    return out


def _aggregate_numpy(points, shift):
    """The same aggregates computed with numpy sorts (large batches); None when numpy is missing.

    min: lowest value, ties → lowest step; max: highest value, ties → lowest
    step; exactly the Python rules, so both paths give identical buckets.
    """
    try:
        import numpy as np
    except ImportError:  # the client never aggregates; the server has numpy
        return None
    steps = np.fromiter((p[0] for p in points), dtype=np.int64, count=len(points))
    values = np.fromiter((p[1] for p in points), dtype=np.float64, count=len(points))
    buckets = steps >> shift
    finite = np.isfinite(values)
    out = {}
    if not finite.all():
        for i in np.flatnonzero(~finite).tolist():
            step, value, ts, epoch = points[i]
            b = step >> shift
            agg = out.get(b)
            if agg is None:
                agg = out[b] = empty_agg()
            add_point(agg, step, value, ts, epoch)
        idx = np.flatnonzero(finite)
    else:
        idx = None
    fs, fv, fb = (steps, values, buckets) if idx is None else (steps[idx], values[idx], buckets[idx])
    if len(fs):
        by_min = np.lexsort((fs, fv, fb))
        by_max = np.lexsort((fs, -fv, fb))
        sorted_b = fb[by_min]
        starts = np.flatnonzero(np.r_[True, sorted_b[1:] != sorted_b[:-1]])
        counts = np.diff(np.r_[starts, len(sorted_b)])
        mins = by_min[starts]
        maxs = by_max[starts]
        if idx is not None:
            mins, maxs = idx[mins], idx[maxs]
        for b, n, i, j in zip(sorted_b[starts].tolist(), counts.tolist(), mins.tolist(), maxs.tolist(), strict=True):
            lo, hi = points[i], points[j]
            agg = out.get(b)
            if agg is None:
                out[b] = [n, 0, lo[0], lo[1], lo[2], lo[3], hi[0], hi[1], hi[2], hi[3], None, None, None, None]
            else:  # the bucket also holds non-finite points
                merge_into(agg, [n, 0, lo[0], lo[1], lo[2], lo[3], hi[0], hi[1], hi[2], hi[3], None, None, None, None])
    return out


def merge_into(agg, other):
    """Fold aggregate `other` into `agg` in place (commutative, associative)."""
    agg[COUNT] += other[COUNT]
    agg[NONFINITE] += other[NONFINITE]
    if other[MIN_STEP] is not None:
        if agg[MIN_STEP] is None:
            agg[2:10] = other[2:10]
        else:
            ov, av = other[MIN_VALUE], agg[MIN_VALUE]
            if ov < av or (ov == av and other[MIN_STEP] < agg[MIN_STEP]):
                agg[2:6] = other[2:6]
            ov, av = other[MAX_VALUE], agg[MAX_VALUE]
            if ov > av or (ov == av and other[MAX_STEP] < agg[MAX_STEP]):
                agg[6:10] = other[6:10]
    if other[NF_STEP] is not None and (agg[NF_STEP] is None or other[NF_STEP] < agg[NF_STEP]):
        agg[10:14] = other[10:14]
    return agg


def coarsen(aggs, extra_shift):
    """Aggregates of a finer level ({bucket: agg}) merged into buckets `extra_shift` bits wider."""
    out = {}
    for b, agg in aggs.items():
        cb = b >> extra_shift
        target = out.get(cb)
        if target is None:
            out[cb] = list(agg)
        else:
            merge_into(target, agg)
    return out


def group_aggs(items, lo, hi, groups, width=1):
    """Merge (first_step, agg) items into `groups` equal step intervals of [lo, hi].

    `width` is the number of steps each item covers (1 for raw points).
    Returns the merged aggs in step order.
    """
    span = hi - lo + 1
    out = {}
    for first_step, agg in items:
        mid = first_step + width // 2
        g = min(groups - 1, max(0, (mid - lo) * groups // span))
        target = out.get(g)
        if target is None:
            out[g] = list(agg)
        else:
            merge_into(target, agg)
    return [out[g] for g in sorted(out)]


def points_of(aggs, lo=None, hi=None):
    """The min and max point of each aggregate, in step order, clipped to [lo, hi].

    Returns (finite points, non-finite points), each a list of (step, value, timestamp, epoch).
    """
    finite = []
    nonfinite = []
    for agg in aggs:
        if agg[MIN_STEP] is not None:
            a = (agg[MIN_STEP], agg[MIN_VALUE], agg[MIN_TS], agg[MIN_EPOCH])
            b = (agg[MAX_STEP], agg[MAX_VALUE], agg[MAX_TS], agg[MAX_EPOCH])
            if a[0] > b[0]:
                a, b = b, a
            finite.append(a)
            if b[0] != a[0] or b[1] != a[1]:
                finite.append(b)
        if agg[NF_STEP] is not None:
            nonfinite.append((agg[NF_STEP], agg[NF_VALUE], agg[NF_TS], agg[NF_EPOCH]))
    if lo is not None:
        finite = [p for p in finite if lo <= p[0] <= hi]
        nonfinite = [p for p in nonfinite if lo <= p[0] <= hi]
    return finite, nonfinite


def downsample_points(points, max_points, lo=None, hi=None):
    """Raw points → at most ~max_points, keeping every interval's min and max (spikes survive).

    Points are (step, value, timestamp, epoch) in step order. Returns
    (finite points, non-finite points) in step order; with no more than
    max_points points, all of them.
    """
    if not points:
        return [], []
    if len(points) <= max_points:
        finite = [p for p in points if _isfinite(p[1])]
        nonfinite = [p for p in points if not _isfinite(p[1])]
        return finite, nonfinite
    lo = points[0][0] if lo is None else lo
    hi = points[-1][0] if hi is None else hi
    groups = max(1, max_points // 2)
    span = hi - lo + 1
    out = {}
    for step, value, ts, epoch in points:
        g = min(groups - 1, max(0, (step - lo) * groups // span))
        agg = out.get(g)
        if agg is None:
            agg = out[g] = empty_agg()
        add_point(agg, step, value, ts, epoch)
    return points_of([out[g] for g in sorted(out)])


def nonfinite_label(value):
    """NaN/±Inf as the strings the API uses ("NaN", "Infinity", "-Infinity"); None for finite."""
    if value is None or value != value:
        return "NaN"
    if value == math.inf:
        return "Infinity"
    if value == -math.inf:
        return "-Infinity"
    return None


def parse_value(raw):
    """A metric value from JSON: a number or "NaN"/"Infinity"/"-Infinity" → float; ValueError otherwise."""
    if isinstance(raw, bool):
        raise ValueError("a boolean is not a metric value")
    if isinstance(raw, (int, float)):
        try:
            return float(raw)
        except OverflowError:
            raise ValueError(f"{raw!r} is too large for a float") from None
    if isinstance(raw, str):
        word = raw.strip().lower()
        if word in ("nan", "+nan"):
            return math.nan
        if word in ("infinity", "+infinity", "inf", "+inf"):
            return math.inf
        if word in ("-infinity", "-inf"):
            return -math.inf
    raise ValueError(f"{raw!r} is not a number (use a number or \"NaN\", \"Infinity\", \"-Infinity\")")


# --- column-wise aggregation (large batches; numpy) ----------------------------------
#
# The same aggregates as `aggregate` + `coarsen`, on numpy columns: a dict of arrays
# "bucket", "count", "nonfinite", "has_min", "min_step", "min_value", "min_ts",
# "min_epoch", the same four for "max", "has_nf" and the four "nf" columns. Raw points
# are items of one point each, so every level is the reduction of the finer one.

_POINT_FIELDS = ("step", "value", "ts", "epoch")


def aggregate_columns(step, value, ts, epoch, levels):
    """[(level, column aggregates)] for points given as numpy arrays (epoch NaN = none), levels ascending."""
    import numpy as np

    finite = np.isfinite(value)
    point = dict(zip(_POINT_FIELDS, (step, value, ts, epoch), strict=True))
    items = {"bucket": step, "count": np.ones(len(step), np.int64), "nonfinite": (~finite).astype(np.int64),
             "has_min": finite, "has_nf": ~finite}  # fmt: skip
    for side in ("min", "max", "nf"):
        items.update((f"{side}_{name}", column) for name, column in point.items())
    out = []
    prev = 0
    for level in levels:
        items = _reduce(items, level - prev)
        prev = level
        out.append((level, items))
    return out


def _first_per_group(groups, mask, primary, step):
    """(group ids, item indices): per group, the masked item with the lowest `primary`, ties → lowest step."""
    import numpy as np

    sel = np.flatnonzero(mask)
    if not len(sel):
        return sel, sel
    keys = (step[sel], groups[sel]) if primary is None else (step[sel], primary[sel], groups[sel])
    order = np.lexsort(keys)
    ordered = groups[sel][order]
    first = np.empty(len(ordered), dtype=bool)
    first[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    return ordered[first], sel[order[first]]


def _reduce(items, shift):
    import numpy as np

    coarse = items["bucket"] >> shift
    if len(coarse) < 2 or (coarse[1:] >= coarse[:-1]).all():  # steps in order: no sort needed
        starts = np.empty(len(coarse), dtype=bool)
        starts[:1] = True
        np.not_equal(coarse[1:], coarse[:-1], out=starts[1:])
        buckets = coarse[starts]
        groups = np.cumsum(starts) - 1
    else:
        buckets, groups = np.unique(coarse, return_inverse=True)
    n = len(buckets)
    out = {
        "bucket": buckets,
        "count": np.bincount(groups, weights=items["count"], minlength=n).astype(np.int64),
        "nonfinite": np.bincount(groups, weights=items["nonfinite"], minlength=n).astype(np.int64),
    }
    picks = {
        "min": _first_per_group(groups, items["has_min"], items["min_value"], items["min_step"]),
        "max": _first_per_group(groups, items["has_min"], -items["max_value"], items["max_step"]),
        "nf": _first_per_group(groups, items["has_nf"], None, items["nf_step"]),
    }
    for side, (where, pick) in picks.items():
        present = np.zeros(n, dtype=bool)
        present[where] = True
        out["has_nf" if side == "nf" else "has_min"] = present
        for name in _POINT_FIELDS:
            column = items[f"{side}_{name}"]
            target = np.zeros(n, dtype=column.dtype)
            target[where] = column[pick]
            out[f"{side}_{name}"] = target
    return out


def nullable_list(column, null):
    """column.tolist() with None where the boolean mask `null` is set (NaN → SQL NULL)."""
    if not null.any():
        return column.tolist()
    if null.all():
        return [None] * len(column)
    out = column.tolist()
    import numpy as np

    for i in np.flatnonzero(null).tolist():
        out[i] = None
    return out


def agg_columns(items, series_id, level):
    """Lists series_id, level, bucket, count, nonfinite_count, min_*, max_*, nf_* of column aggregates."""
    import numpy as np

    n = len(items["bucket"])
    no_min, no_nf = ~items["has_min"], ~items["has_nf"]
    columns = [[series_id] * n, [level] * n, items["bucket"].tolist(),
               items["count"].tolist(), items["nonfinite"].tolist()]  # fmt: skip
    for side, missing in (("min", no_min), ("max", no_min), ("nf", no_nf)):
        for name in _POINT_FIELDS:
            column = items[f"{side}_{name}"]
            null = missing | np.isnan(column) if name in ("value", "epoch") else missing
            columns.append(nullable_list(column, null))
    return columns
