"""The metric store: batch ingest, history reads and chart reads of metric series.

Write path (`ingest`): validate each point (bad ones become per-item errors,
good ones are stored), bulk-insert the raw points with one `executemany` on a
raw cursor, update each touched `MetricSeries` summary once per batch, and
fold the batch into the multi-resolution `MetricBucket` summary (levels of
2**k steps, `BUCKET_LEVELS`): aggregates are computed in Python from the batch
and merged with the touched buckets only, never by rescanning the series.
An idempotency key is recorded in the same transaction: the same key again
returns the first result and stores nothing.

Read paths: `read_history` streams raw points in step order in keyset
chunks (memory flat however long the series); `chart_data` answers with at
most about N points, keeping every interval's min and max, from the bucket
level whose resolution fits, or from the raw points when the range holds few.
"""

import math
import time
from dataclasses import dataclass, field

from django.db import IntegrityError, connection, transaction

from tracker import downsample as ds
from tracker.models import BUCKET_LEVELS, IngestBatch, MetricSeries

MAX_KEY_LENGTH = 250
MAX_STEP = 2**63 - 1
MAX_POINTS_PER_BATCH = 50_000
HISTORY_CHUNK = 10_000

BUCKET_COLUMNS = (
    "count", "nonfinite_count",
    "min_step", "min_value", "min_timestamp", "min_epoch",
    "max_step", "max_value", "max_timestamp", "max_epoch",
    "nf_step", "nf_value", "nf_timestamp", "nf_epoch",
)  # fmt: skip


class BatchTooLarge(ValueError):
    """More points in one batch than MAX_POINTS_PER_BATCH; nothing was stored."""


@dataclass
class IngestResult:
    stored: int
    errors: list = field(default_factory=list)
    duplicate: bool = False


def _error(index, code, message):
    return {"index": index, "code": code, "message": message}


def _number(raw):
    """A finite float from JSON, or None when not one."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        return None
    try:
        value = float(raw)
    except OverflowError:
        return None
    return value if math.isfinite(value) else None


def _key_problem(index, key):
    if not isinstance(key, str) or not key.strip():
        return _error(index, "missing_key", "the point has no metric key")
    if len(key) > MAX_KEY_LENGTH:
        return _error(index, "key_too_long", f"metric keys are at most {MAX_KEY_LENGTH} characters (got {len(key)})")
    if any(ord(c) < 32 for c in key):
        return _error(index, "invalid_key", "metric keys may not contain control characters")
    return None


def validate_point(index, point, now, good_keys=None):
    """(key, step|None, value, timestamp, epoch) or an error dict.

    `good_keys` caches keys already checked in this batch (keys repeat a lot).
    """
    if type(point) is not dict:
        if type(point) is list and 2 <= len(point) <= 5:
            # The compact form the client sends: [key, value, step, timestamp, epoch].
            point = dict(zip(_LIST_FIELDS, point, strict=False))
        elif not isinstance(point, dict):
            return _error(index, "invalid_point", "a point must be an object with key and value")
    key = point.get("key")
    if good_keys is None or key not in good_keys:
        problem = _key_problem(index, key)
        if problem:
            return problem
        if good_keys is not None:
            good_keys.add(key)
    value = point.get("value", _MISSING)
    if type(value) is float:
        pass
    elif value is _MISSING:
        return _error(index, "invalid_value", f"metric {key!r} has no value")
    else:
        try:
            value = ds.parse_value(value)
        except ValueError as exc:
            return _error(index, "invalid_value", f"metric {key!r}: {exc}")
    step = point.get("step")
    if step is not None:
        if type(step) is not int:
            if isinstance(step, float) and step.is_integer():
                step = int(step)
            if isinstance(step, bool) or not isinstance(step, int):
                return _error(index, "invalid_step", f"step must be an integer, got {step!r}")
        if step < 0 or step > MAX_STEP:
            return _error(index, "invalid_step", f"step must be between 0 and 2^63-1, got {step}")
    ts = point.get("timestamp")
    if ts is None:
        ts = now
    elif type(ts) is not float or not (0 <= ts < math.inf):
        ts = _number(ts)
        if ts is None or ts < 0:
            return _error(index, "invalid_timestamp", "timestamp must be a finite number of unix seconds")
    epoch = point.get("epoch")
    if epoch is not None and (type(epoch) is not float or not (-math.inf < epoch < math.inf)):
        epoch = _number(epoch)
        if epoch is None:
            return _error(index, "invalid_epoch", "epoch must be a finite number")
    return key, step, value, ts, epoch


_MISSING = object()
_INF = math.inf
_LIST_FIELDS = ("key", "value", "step", "timestamp", "epoch")


def _placeholder():
    return "%s"


def ingest(run, points, idempotency_key=None):
    """Store a batch of metric points for `run`; returns IngestResult(stored, errors, duplicate).

    Each point: {"key", "value" (number or "NaN"/"Infinity"/"-Infinity"),
    "step" (int ≥ 0, or None: one past the key's highest step), "timestamp"
    (unix seconds, None: now), "epoch" (number or None)}, or the compact list
    [key, value, step, timestamp, epoch]. Bad points are reported as
    {"index", "code", "message"}; the good ones are stored.
    """
    if not isinstance(points, (list, tuple)):
        raise ValueError("points must be a list")
    if len(points) > MAX_POINTS_PER_BATCH:
        raise BatchTooLarge(f"a batch holds at most {MAX_POINTS_PER_BATCH} points (got {len(points)})")
    now = time.time()
    errors = []
    good = []
    good_keys = set()
    append = good.append
    for index, point in enumerate(points):
        # Fast path for the client's compact form with plain floats and ints; anything else is checked in full.
        if type(point) is list and len(point) == 5:
            key, value, step, ts, epoch = point
            if (
                key in good_keys
                and type(value) is float
                and type(step) is int
                and 0 <= step <= MAX_STEP
                and type(ts) is float
                and 0.0 <= ts < _INF
                and (epoch is None or (type(epoch) is float and -_INF < epoch < _INF))
            ):
                append((key, step, value, ts, epoch))
                continue
        parsed = validate_point(index, point, now, good_keys)
        if type(parsed) is dict:
            errors.append(parsed)
        else:
            append(parsed)

    with transaction.atomic():
        batch = None
        if idempotency_key:
            try:
                with transaction.atomic():
                    batch = IngestBatch.objects.create(run=run, key=str(idempotency_key)[:200])
            except IntegrityError:
                first = IngestBatch.objects.get(run=run, key=str(idempotency_key)[:200])
                return IngestResult(stored=first.stored, errors=first.errors, duplicate=True)
        stored = _store(run, good) if good else 0
        if batch is not None:
            batch.stored = stored
            batch.errors = errors
            batch.save(update_fields=["stored", "errors"])
    return IngestResult(stored=stored, errors=errors)


def _series_for(run, keys):
    """{key: MetricSeries} for `keys`, created when missing, locked for this transaction."""
    existing = set(MetricSeries.objects.filter(run=run, key__in=keys).values_list("key", flat=True))
    missing = [MetricSeries(run=run, key=k) for k in keys if k not in existing]
    if missing:
        MetricSeries.objects.bulk_create(missing, ignore_conflicts=True)
    return {s.key: s for s in MetricSeries.objects.select_for_update().filter(run=run, key__in=keys)}


def _store(run, good):
    by_key = {}
    for key, step, value, ts, epoch in good:
        bucket = by_key.get(key)
        if bucket is None:
            bucket = by_key[key] = []
        bucket.append((step, value, ts, epoch))
    series_map = _series_for(run, list(by_key))

    rows = []
    per_series = []
    for key, pts in by_key.items():
        series = series_map[key]
        if any(p[0] is None for p in pts):
            next_step = (series.max_step + 1) if series.max_step is not None else 0
            resolved = []
            for step, value, ts, epoch in pts:
                if step is None:
                    step = next_step
                if step >= next_step:
                    next_step = step + 1 if step < MAX_STEP else step
                resolved.append((step, value, ts, epoch))
        else:
            resolved = pts
        sid = series.pk
        rows.extend([(sid, s, (v if v == v else None), t, e) for s, v, t, e in resolved])
        per_series.append((series, resolved))

    # The raw DB-API cursor: Django's wrapper adds nothing here but per-call overhead.
    connection.ensure_connection()
    raw = connection.connection.cursor()
    try:
        if connection.vendor == "postgresql" and hasattr(raw, "copy"):
            # PostgreSQL: COPY streams the rows in one statement (psycopg 3), far faster than INSERTs.
            with raw.copy("COPY tracker_metricpoint (series_id, step, value, timestamp, epoch) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            q = "?" if connection.vendor == "sqlite" else "%s"
            raw.executemany(
                f"INSERT INTO tracker_metricpoint (series_id, step, value, timestamp, epoch) "
                f"VALUES ({q}, {q}, {q}, {q}, {q})",
                rows,
            )
    finally:
        raw.close()
    with connection.cursor() as cursor:
        for series, resolved in per_series:
            _update_series(series, resolved)
            _update_buckets(cursor, series.pk, resolved)
    return len(rows)


def _update_series(series, points):
    """Fold a batch into the series summary (one UPDATE per series per batch)."""
    finite = [p[1] for p in points if math.isfinite(p[1])]
    last = None
    for p in points:  # highest step wins; among equal steps, the later point
        if last is None or p[0] >= last[0]:
            last = p
    series.count += len(points)
    series.nonfinite_count += len(points) - len(finite)
    if finite:
        lo, hi = min(finite), max(finite)
        series.min_value = lo if series.min_value is None else min(series.min_value, lo)
        series.max_value = hi if series.max_value is None else max(series.max_value, hi)
    first_ts = min(p[2] for p in points)
    series.first_timestamp = first_ts if series.first_timestamp is None else min(series.first_timestamp, first_ts)
    if series.max_step is None or last[0] >= series.max_step:
        series.max_step = last[0]
        series.last_step = last[0]
        series.last_value = last[1] if last[1] == last[1] else None
        series.last_timestamp = last[2]
        series.last_epoch = last[3]
    series.save(
        update_fields=[
            "count", "nonfinite_count", "min_value", "max_value", "first_timestamp",
            "max_step", "last_step", "last_value", "last_timestamp", "last_epoch",
        ]  # fmt: skip
    )


def _update_buckets(cursor, series_id, points):
    """Merge the batch's aggregates into the touched buckets of every level (upsert per bucket)."""
    p = _placeholder()
    cols = ", ".join(BUCKET_COLUMNS)
    select = (
        f"SELECT bucket, {cols} FROM tracker_metricbucket "
        f"WHERE series_id = {p} AND level = {p} AND bucket BETWEEN {p} AND {p}"
    )
    upsert = (
        f"INSERT INTO tracker_metricbucket (series_id, level, bucket, {cols}) "
        f"VALUES ({', '.join([p] * (3 + len(BUCKET_COLUMNS)))}) "
        f"ON CONFLICT (series_id, level, bucket) DO UPDATE SET "
        + ", ".join(f"{c} = excluded.{c}" for c in BUCKET_COLUMNS)
    )
    aggs = None
    prev = 0
    rows = []
    for level in BUCKET_LEVELS:
        aggs = ds.aggregate(points, level) if aggs is None else ds.coarsen(aggs, level - prev)
        prev = level
        cursor.execute(select, [series_id, level, min(aggs), max(aggs)])
        merged = dict(aggs)  # the batch's own aggs stay untouched: the next level coarsens them
        for row in cursor.fetchall():
            agg = aggs.get(row[0])
            if agg is not None:
                stored = list(row[1:])
                if stored[ds.NF_STEP] is not None and stored[ds.NF_VALUE] is None:
                    stored[ds.NF_VALUE] = math.nan
                merged[row[0]] = ds.merge_into(list(agg), stored)
        for b, agg in merged.items():
            nf_value = agg[ds.NF_VALUE]
            rows.append(
                (series_id, level, b, *agg[:11], None if nf_value is not None and nf_value != nf_value else nf_value, agg[12], agg[13])
            )
    cursor.executemany(upsert, rows)


def get_series(run, key):
    return MetricSeries.objects.filter(run=run, key=key).first()


def iter_points(series_id, start_step=None, end_step=None, limit=None, chunk=HISTORY_CHUNK, after=None, with_id=False):
    """Raw points of a series in step order, read in keyset chunks: (step, value, timestamp, epoch).

    `after` = (step, id) resumes after that row (API page tokens); with_id
    puts the row id first in each tuple. Memory stays at one chunk.
    """
    p = _placeholder()
    if after is not None:
        last_step, last_id = after
        if start_step is not None and last_step < start_step:
            last_step, last_id = start_step - 1, None
    else:
        last_step = -1 if start_step is None else start_step - 1
        last_id = None
    end = MAX_STEP if end_step is None else end_step
    remaining = limit
    while remaining is None or remaining > 0:
        size = chunk if remaining is None else min(chunk, remaining)
        with connection.cursor() as cursor:
            if last_id is None:
                cursor.execute(
                    f"SELECT id, step, value, timestamp, epoch FROM tracker_metricpoint "
                    f"WHERE series_id = {p} AND step > {p} AND step <= {p} ORDER BY step, id LIMIT {int(size)}",
                    [series_id, last_step, end],
                )
            else:
                cursor.execute(
                    f"SELECT id, step, value, timestamp, epoch FROM tracker_metricpoint "
                    f"WHERE series_id = {p} AND step <= {p} AND (step > {p} OR (step = {p} AND id > {p})) "
                    f"ORDER BY step, id LIMIT {int(size)}",
                    [series_id, end, last_step, last_step, last_id],
                )
            rows = cursor.fetchall()
        if not rows:
            return
        if with_id:
            for pk, step, value, ts, epoch in rows:
                yield pk, step, (math.nan if value is None else value), ts, epoch
        else:
            for _pk, step, value, ts, epoch in rows:
                yield step, (math.nan if value is None else value), ts, epoch
        last_id, last_step = rows[-1][0], rows[-1][1]
        if remaining is not None:
            remaining -= len(rows)
        if len(rows) < size:
            return


def read_history(run, key, start_step=None, end_step=None, limit=None):
    """Yield (step, value, timestamp, epoch) of metric `key` in step order; NaN as float('nan')."""
    series = get_series(run, key)
    if series is None:
        return
    yield from iter_points(series.pk, start_step, end_step, limit)


# --- chart reads -----------------------------------------------------------


def _scalar(sql, params):
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return row[0] if row else None


def min_step(series):
    p = _placeholder()
    return _scalar(f"SELECT MIN(step) FROM tracker_metricpoint WHERE series_id = {p}", [series.pk])


def count_range(series, lo, hi, whole=None):
    """Exact number of points with lo ≤ step ≤ hi, from the buckets (raw rows only at the edges)."""
    if lo > hi:
        return 0
    if whole is not None and lo <= whole[0] and hi >= whole[1]:
        return series.count
    return _count(series.pk, lo, hi, tuple(sorted(BUCKET_LEVELS, reverse=True)))


def _count(series_id, lo, hi, levels):
    if lo > hi:
        return 0
    p = _placeholder()
    for i, level in enumerate(levels):
        size = 1 << level
        first = -(-lo // size)
        last = (hi + 1) // size - 1
        if first <= last:
            n = _scalar(
                f"SELECT COALESCE(SUM(count), 0) FROM tracker_metricbucket "
                f"WHERE series_id = {p} AND level = {p} AND bucket BETWEEN {p} AND {p}",
                [series_id, level, first, last],
            )
            rest = levels[i + 1 :]
            return int(n) + _count(series_id, lo, first * size - 1, rest) + _count(series_id, (last + 1) * size, hi, rest)
    return int(
        _scalar(
            f"SELECT COUNT(*) FROM tracker_metricpoint WHERE series_id = {p} AND step BETWEEN {p} AND {p}",
            [series_id, lo, hi],
        )
    )


def _bisect_step(series, column, lo, hi, past):
    """The smallest step s in [lo, hi + 1] whose first point at or after s has `column` past the value.

    `past(x)` says whether x is past the value; `column` (timestamp|epoch) is
    assumed non-decreasing in step, as in a training loop. Each probe is one
    index lookup on (series, step).
    """
    assert column in ("timestamp", "epoch")
    p = _placeholder()
    probe = (
        f"SELECT {column} FROM tracker_metricpoint WHERE series_id = {p} AND step >= {p} AND step <= {p} "
        f"ORDER BY step LIMIT 1"
    )
    a, b = lo, hi + 1
    while a < b:
        mid = (a + b) // 2
        row = None
        with connection.cursor() as cursor:
            cursor.execute(probe, [series.pk, mid, hi])
            row = cursor.fetchone()
        if row is None or row[0] is None or past(row[0]):
            b = mid
        else:
            a = mid + 1
    return a


def _read_bucket_aggs(series_id, level, first, last):
    p = _placeholder()
    cols = ", ".join(BUCKET_COLUMNS)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT bucket, {cols} FROM tracker_metricbucket WHERE series_id = {p} AND level = {p} "
            f"AND bucket BETWEEN {p} AND {p} ORDER BY bucket",
            [series_id, level, first, last],
        )
        rows = cursor.fetchall()
    out = []
    for row in rows:
        agg = list(row[1:])
        if agg[ds.NF_STEP] is not None and agg[ds.NF_VALUE] is None:
            agg[ds.NF_VALUE] = math.nan
        out.append((row[0] << level, agg))
    return out


def chart_points(series, lo, hi, max_points):
    """(finite points, non-finite points, total in range, level used or None) for steps [lo, hi]."""
    total = count_range(series, lo, hi, whole=(min_step(series), series.max_step))
    if total <= max_points:
        points = list(iter_points(series.pk, lo, hi))
        finite, nonfinite = ds.downsample_points(points, max_points)
        return finite, nonfinite, total, None
    groups = max(1, max_points // 2)
    span = hi - lo + 1
    level = None
    for k in sorted(BUCKET_LEVELS, reverse=True):
        # The coarsest level with at least half as many buckets as intervals wanted: each bucket then
        # gives its min and max (≤ N points in all) and a read touches at most ~N rows.
        if (span >> k) >= groups // 2:
            level = k
            break
    finest = min(BUCKET_LEVELS)
    if level is None and (span >> finest) >= groups // 4:
        # A zoomed range: the finest buckets still give ≥ N/4 points, each bucket's min and max.
        level = finest
        groups = (span >> finest) + 1
    if level is None:
        points = list(iter_points(series.pk, lo, hi))
        finite, nonfinite = ds.downsample_points(points, max_points, lo, hi)
        return finite, nonfinite, total, 0
    items = _read_bucket_aggs(series.pk, level, lo >> level, hi >> level)
    aggs = ds.group_aggs(items, lo, hi, groups, width=1 << level)
    finite, nonfinite = ds.points_of(aggs, lo, hi)
    return finite, nonfinite, total, level


def chart_data(series, *, x="step", start=None, end=None, max_points=2000, since=None):
    """The JSON answer of a chart request (see docs/api.md, "Chart data")."""
    answer = {
        "key": series.key if series else None,
        "xaxis": x,
        "x": [],
        "y": [],
        "steps": [],
        "nonfinite": [],
        "total_points": 0,
        "returned_points": 0,
        "series_points": series.count if series else 0,
        "downsampled": False,
        "level": None,
        "last_step": series.max_step if series else None,
        "since": since,
    }
    if series is None or series.count == 0:
        return answer
    first_step = min_step(series)
    lo, hi = first_step, series.max_step
    if since is not None:
        lo = max(lo, since + 1)
    if x == "step":
        if start is not None:
            lo = max(lo, math.ceil(start))
        if end is not None:
            hi = min(hi, math.floor(end))
    elif start is not None or end is not None:
        column = "timestamp" if x == "time" else "epoch"
        first, last = lo, hi
        if start is not None:
            lo = max(lo, _bisect_step(series, column, first, last, lambda v: v >= start))
        if end is not None:
            hi = min(hi, _bisect_step(series, column, first, last, lambda v: v > end) - 1)
    if lo > hi:
        return answer
    finite, nonfinite, total, level = chart_points(series, lo, hi, max_points)
    pick = {"step": 0, "time": 2, "epoch": 3}[x]
    merged = sorted([(p, False) for p in finite] + [(p, True) for p in nonfinite], key=lambda item: item[0][0])
    xs, ys, steps, nf = [], [], [], []
    for point, is_nf in merged:
        xs.append(point[pick])
        steps.append(point[0])
        if is_nf:
            ys.append(None)
            nf.append({"x": point[pick], "step": point[0], "value": ds.nonfinite_label(point[1])})
        else:
            ys.append(point[1])
    answer.update(
        x=xs, y=ys, steps=steps, nonfinite=nf, total_points=total, returned_points=len(xs),
        downsampled=level is not None, level=level, range=[lo, hi],
    )  # fmt: skip
    return answer
