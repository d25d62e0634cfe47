"""The metric store: batch ingest, history reads and chart reads of metric series.

Write path (`ingest` for JSON points, `ingest_packed` for the packed wire
format): validate each point (bad ones become per-item errors, good ones are
stored), then per series in one transaction: one SELECT of the series row
(locked), the raw points (multi-row INSERTs on SQLite, COPY on PostgreSQL),
one UPDATE of the summary, and the batch's aggregates of every bucket level
(`BUCKET_LEVELS`) merged into the stored buckets by SQL upserts, never by
rescanning or reading back. Few points are folded in plain Python
(`SmallBatch`: one point is four statements), many with numpy (`ArrayBatch`).
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

from django.db import connection, transaction
from django.utils import timezone

from tracker import downsample as ds
from tracker.models import BUCKET_LEVELS, IngestBatch, MetricSeries, Run

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
    by_key = {}
    good_keys = set()
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
                by_key[key].append((step, value, ts, epoch))
                continue
        parsed = validate_point(index, point, now, good_keys)
        if type(parsed) is dict:
            errors.append(parsed)
        else:
            key, step, value, ts, epoch = parsed
            group = by_key.get(key)
            if group is None:
                group = by_key[key] = []
            group.append((step, value, ts, epoch))
    return _commit(run, {key: batch_of(group) for key, group in by_key.items()}, errors, idempotency_key)


def ingest_packed(run, packed, idempotency_key=None):
    """Store points decoded from the packed wire format (tracker.client.wire.PackedPoints), validated column-wise.

    Same answer and error codes as `ingest`; step -1 means "none" and epoch NaN means "no epoch".
    """
    import numpy as np

    n = len(packed)
    if n > MAX_POINTS_PER_BATCH:
        raise BatchTooLarge(f"a batch holds at most {MAX_POINTS_PER_BATCH} points (got {n})")
    key_index = np.frombuffer(packed.key_index, dtype=np.uint32)
    value = np.frombuffer(packed.value, dtype=np.float64)
    step = np.frombuffer(packed.step, dtype=np.int64)
    ts = np.frombuffer(packed.timestamp, dtype=np.float64)
    epoch = np.frombuffer(packed.epoch, dtype=np.float64)
    if len(set(packed.keys)) < len(packed.keys):
        # The same key listed twice in the key table: one series, so one index for both.
        first = {}
        canonical = np.array([first.setdefault(key, i) for i, key in enumerate(packed.keys)], dtype=np.uint32)
        key_index = canonical[key_index]
    key_problems = [_key_problem(0, key) for key in packed.keys]
    checks = [
        (np.flatnonzero(step < -1), "invalid_step", "step must be between 0 and 2^63-1 (or -1: none), got {step}"),
        (np.flatnonzero(~(np.isfinite(ts) & (ts >= 0))), "invalid_timestamp",
         "timestamp must be a finite number of unix seconds"),
        (np.flatnonzero(np.isinf(epoch)), "invalid_epoch", "epoch must be a finite number"),
    ]  # fmt: skip
    if any(key_problems):
        bad_keys = np.array([p is not None for p in key_problems], dtype=bool)
        checks.insert(0, (np.flatnonzero(bad_keys[key_index]), None, None))
    bad = {}
    for indices, code, message in checks:
        for i in indices.tolist():
            if i in bad:
                continue  # one error per point: the first problem, in the JSON path's order
            if code is None:
                problem = key_problems[key_index[i]]
                bad[i] = _error(i, problem["code"], problem["message"])
            else:
                bad[i] = _error(i, code, message.format(step=int(step[i])))
    errors = [bad[i] for i in sorted(bad)]
    if bad:
        good = np.ones(n, dtype=bool)
        good[list(bad)] = False
        key_index, value, step, ts, epoch = (a[good] for a in (key_index, value, step, ts, epoch))
    groups = {}
    if len(key_index):
        used = np.unique(key_index)
        for k in used.tolist():
            pick = (key_index == k) if len(used) > 1 else slice(None)
            columns = (step[pick], value[pick], ts[pick], epoch[pick])
            if len(columns[0]) < SMALL_BATCH:
                groups[packed.keys[k]] = SmallBatch(
                    [
                        (None if s < 0 else s, v, t, None if e != e else e)
                        for s, v, t, e in zip(*(c.tolist() for c in columns), strict=True)
                    ]
                )
            else:
                groups[packed.keys[k]] = ArrayBatch(*columns)
    return _commit(run, groups, errors, idempotency_key)


def _commit(run, groups, errors, idempotency_key):
    """Store the validated `groups` and record the idempotency key, in one transaction."""
    with transaction.atomic():
        batch_id = None
        if idempotency_key:
            key = str(idempotency_key)[:200]
            batch_id = _claim_batch(run, key)
            if batch_id is None:  # a retry: answer with the first result (rare, so the ORM is fine)
                first = IngestBatch.objects.get(run=run, key=key)
                return IngestResult(stored=first.stored, errors=first.errors, duplicate=True)
        stored = _store(run, groups) if groups else 0
        if batch_id is not None and (stored or errors):
            errors_field = IngestBatch._meta.get_field("errors")
            with connection.cursor() as cursor:
                cursor.execute(
                    "UPDATE tracker_ingestbatch SET stored = %s, errors = %s WHERE id = %s",
                    [stored, errors_field.get_db_prep_save(errors, connection), batch_id],
                )
    return IngestResult(stored=stored, errors=errors)


def _claim_batch(run, key):
    """Record idempotency key `key` for `run`: its row id, or None when the key was there already.

    ON CONFLICT DO NOTHING instead of a savepoint and a caught IntegrityError: one
    statement per batch. On PostgreSQL a concurrent claim of the same key waits for
    the first transaction and then finds the row.
    """
    fields = IngestBatch._meta
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO tracker_ingestbatch (run_id, key, stored, errors, created_at) VALUES (%s, %s, 0, %s, %s) "
            "ON CONFLICT (run_id, key) DO NOTHING RETURNING id",
            [
                fields.get_field("run").get_db_prep_save(run.pk, connection),
                key,
                fields.get_field("errors").get_db_prep_save([], connection),
                fields.get_field("created_at").get_db_prep_save(timezone.now(), connection),
            ],
        )
        row = cursor.fetchone()
    return row[0] if row else None


# --- write path ----------------------------------------------------------------
#
# Raw DB-API cursors and hand-written SQL throughout: this path runs once per
# batch of up to 50,000 points, and once per point for MLflow's log_metric, so
# Django's per-statement overhead would be a large share of the cost.

SMALL_BATCH = 256  # fewer points per series than this: plain Python beats numpy's per-call cost

_SERIES_COLUMNS = "id, key, count, nonfinite_count, min_value, max_value, first_timestamp, max_step"
_POINT_INSERT = ("INSERT INTO tracker_metricpoint (series_id, step, value, timestamp, epoch) VALUES", "")
# Rows per multi-row INSERT: one statement of many rows costs a third of as many one-row
# executions (sqlite3 binds and steps each executemany row separately), within SQLite's
# 32,766 parameters.
PARAMS_PER_STATEMENT = 2500
_WINS = {
    # When the batch's aggregate (excluded) replaces the stored one; full ties keep the stored
    # one (the earlier point), as a recount in read order would.
    "min": "excluded.min_step IS NOT NULL AND (b.min_step IS NULL OR excluded.min_value < b.min_value "
           "OR (excluded.min_value = b.min_value AND excluded.min_step < b.min_step))",
    "max": "excluded.max_step IS NOT NULL AND (b.max_step IS NULL OR excluded.max_value > b.max_value "
           "OR (excluded.max_value = b.max_value AND excluded.max_step < b.max_step))",
    "nf": "excluded.nf_step IS NOT NULL AND (b.nf_step IS NULL OR excluded.nf_step < b.nf_step)",
}  # fmt: skip
# One upsert per bucket merges the batch's aggregate into the stored one in SQL (every SET
# expression sees the row before the update), so no bucket is read back into Python.
_BUCKET_UPSERT = (
    f"INSERT INTO tracker_metricbucket AS b (series_id, level, bucket, {', '.join(BUCKET_COLUMNS)}) VALUES",
    "ON CONFLICT (series_id, level, bucket) DO UPDATE SET "
    "count = b.count + excluded.count, nonfinite_count = b.nonfinite_count + excluded.nonfinite_count, "
    + ", ".join(
        f"{c} = CASE WHEN {_WINS[c.split('_')[0]]} THEN excluded.{c} ELSE b.{c} END" for c in BUCKET_COLUMNS[2:]
    )
)


def _sql(query):
    """`query` with the connection's placeholder style (the raw sqlite3 cursor takes `?`)."""
    return query.replace("%s", "?") if connection.vendor == "sqlite" else query


def _raw_cursor():
    # The DB-API cursor itself: Django's wrapper adds nothing here but per-call overhead.
    connection.ensure_connection()
    if connection.vendor == "postgresql":
        import psycopg

        # Server-side binding: parameters travel apart from the statement, so psycopg neither
        # quotes every value into the SQL text nor re-parses long statements (Django's cursors
        # bind client-side).
        return psycopg.Cursor(connection.connection)
    return connection.connection.cursor()


def _lock_series(cursor, run, keys):
    """{key: [id, key, count, nonfinite_count, min_value, max_value, first_timestamp, max_step]}, created when
    missing, locked for this transaction (SQLite: the IMMEDIATE transaction holds the write lock already)."""
    run_id = Run._meta.pk.get_db_prep_value(run.pk, connection)
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    marks = ", ".join(["%s"] * len(keys))
    select = _sql(f"SELECT {_SERIES_COLUMNS} FROM tracker_metricseries WHERE run_id = %s AND key IN ({marks}){lock}")
    cursor.execute(select, [run_id, *keys])
    found = {row[1]: list(row) for row in cursor.fetchall()}
    missing = [k for k in keys if k not in found]
    if missing:
        # New series are rare (a key's first batch): the ORM fills in what the model derives from the run.
        MetricSeries.objects.bulk_create([MetricSeries(run=run, key=k) for k in missing], ignore_conflicts=True)
        marks = ", ".join(["%s"] * len(missing))
        select = f"SELECT {_SERIES_COLUMNS} FROM tracker_metricseries WHERE run_id = %s AND key IN ({marks}){lock}"
        cursor.execute(_sql(select), [run_id, *missing])
        found.update((row[1], list(row)) for row in cursor.fetchall())
    return found


def _store(run, groups):
    """Store `groups` ({key: SmallBatch | ArrayBatch}) in this transaction; returns the number of points stored."""
    cursor = _raw_cursor()
    try:
        series = _lock_series(cursor, run, list(groups))
        bucket_params = []
        stored = 0
        for key, batch in groups.items():
            row = series[key]
            batch.resolve_steps(row[7])
            _insert_points(cursor, row[0], batch)
            _update_summary(cursor, row, batch.summary())
            bucket_params += batch.bucket_params(row[0])
            stored += len(batch)
        _upsert_buckets(cursor, bucket_params)
    finally:
        cursor.close()
    return stored


def _insert_points(cursor, series_id, batch):
    if connection.vendor == "postgresql" and hasattr(cursor, "copy"):
        # PostgreSQL: COPY streams the rows in one statement (psycopg 3), far faster than INSERTs;
        # a large batch goes as one binary COPY body built by numpy, not a Python call per row.
        columns = "COPY tracker_metricpoint (series_id, step, value, timestamp, epoch) FROM STDIN"
        body = batch.binary_copy(series_id)
        if body is not None:
            with cursor.copy(columns + " (FORMAT BINARY)") as copy:
                copy.write(body)
            return
        if len(batch) >= SMALL_BATCH:
            with cursor.copy(columns) as copy:
                for row in zip(*[iter(batch.point_params(series_id))] * 5, strict=True):
                    copy.write_row(row)
            return
        # A few rows: one INSERT is a round trip fewer than COPY's start and end.
        _insert_rows(cursor, *_POINT_INSERT, 5, batch.point_params(series_id))
    else:
        _insert_rows(cursor, *_POINT_INSERT, 5, batch.point_params(series_id))


_BUCKET_TYPES = ("bigint", "smallint", "bigint", "bigint", "bigint") + (
    "bigint", "double precision", "double precision", "double precision") * 3  # fmt: skip


def _upsert_buckets(cursor, params):
    width = 3 + len(BUCKET_COLUMNS)
    if connection.vendor == "postgresql":
        # One statement over 17 arrays: psycopg re-parses a long multi-row statement on every call
        # and runs executemany row by row in Python, both far slower than sending arrays.
        head, tail = _BUCKET_UPSERT
        arrays = ", ".join(f"%s::{t}[]" for t in _BUCKET_TYPES)
        cursor.execute(
            f"{head.removesuffix(' VALUES')} SELECT * FROM unnest({arrays}) {tail}",
            [params[i::width] for i in range(width)],
        )
    else:
        _insert_rows(cursor, *_BUCKET_UPSERT, width, params)


def _insert_rows(cursor, head, tail, width, params):
    """Run `head VALUES (…), (…) tail` over `params` (rows of `width` values, flattened), many rows a statement."""
    row = "(" + ", ".join(["%s"] * width) + ")"
    per_statement = max(1, PARAMS_PER_STATEMENT // width) * width
    full = None
    for start in range(0, len(params), per_statement):
        chunk = params[start : start + per_statement]
        if len(chunk) == per_statement:
            if full is None:
                full = _sql(f"{head} {', '.join([row] * (per_statement // width))} {tail}")
            cursor.execute(full, chunk)
        else:
            cursor.execute(_sql(f"{head} {', '.join([row] * (len(chunk) // width))} {tail}"), chunk)


def _interleave(columns):
    """Equal-length columns → one flat row-major list of parameters."""
    width, n = len(columns), len(columns[0])
    flat = [None] * (width * n)
    for i, column in enumerate(columns):
        flat[i::width] = column
    return flat


def _update_summary(cursor, row, summary):
    """Fold a batch's summary into the series row (one UPDATE per series per batch)."""
    sid, _key, count, nonfinite, lo, hi, first_ts, max_step = row
    n, n_nonfinite, batch_lo, batch_hi, batch_first_ts, last = summary
    if batch_lo is not None:
        lo = batch_lo if lo is None else min(lo, batch_lo)
        hi = batch_hi if hi is None else max(hi, batch_hi)
    first_ts = batch_first_ts if first_ts is None else min(first_ts, batch_first_ts)
    values = [count + n, nonfinite + n_nonfinite, lo, hi, first_ts]
    sets = "count = %s, nonfinite_count = %s, min_value = %s, max_value = %s, first_timestamp = %s"
    if max_step is None or last[0] >= max_step:
        last_value = last[1] if last[1] == last[1] else None
        values += [last[0], last[0], last_value, last[2], last[3]]
        sets += ", max_step = %s, last_step = %s, last_value = %s, last_timestamp = %s, last_epoch = %s"
    cursor.execute(_sql(f"UPDATE tracker_metricseries SET {sets} WHERE id = %s"), [*values, sid])


def _next_steps(steps, next_step):
    """Steps with None replaced by one past the highest step so far (in batch order)."""
    resolved = []
    for step in steps:
        if step is None:
            step = next_step
        if step >= next_step:
            next_step = step + 1 if step < MAX_STEP else step
        resolved.append(step)
    return resolved


class SmallBatch:
    """A few points of one series as (step|None, value, timestamp, epoch) tuples, folded in plain Python."""

    def __init__(self, points):
        self.points = points

    def __len__(self):
        return len(self.points)

    def resolve_steps(self, max_step):
        if any(p[0] is None for p in self.points):
            steps = _next_steps([p[0] for p in self.points], 0 if max_step is None else max_step + 1)
            self.points = [(s, *p[1:]) for s, p in zip(steps, self.points, strict=True)]

    def point_params(self, series_id):
        return [x for s, v, t, e in self.points for x in (series_id, s, (v if v == v else None), t, e)]

    def binary_copy(self, series_id):
        return None  # a few rows: COPY row by row costs less than building the body

    def summary(self):
        """(count, non-finite count, min, max, first timestamp, last point) of the batch."""
        points = self.points
        finite = [p[1] for p in points if math.isfinite(p[1])]
        last = points[0]
        for p in points:  # highest step wins; among equal steps, the later point
            if p[0] >= last[0]:
                last = p
        lo, hi = (min(finite), max(finite)) if finite else (None, None)
        return len(points), len(points) - len(finite), lo, hi, min(p[2] for p in points), last

    def bucket_params(self, series_id):
        rows = []
        aggs = None
        prev = 0
        for level in BUCKET_LEVELS:
            aggs = ds.aggregate(self.points, level) if aggs is None else ds.coarsen(aggs, level - prev)
            prev = level
            for b, agg in aggs.items():
                nf_value = agg[ds.NF_VALUE]
                if nf_value is not None and nf_value != nf_value:
                    nf_value = None  # NaN is stored as NULL
                rows += (series_id, level, b, *agg[:11], nf_value, agg[12], agg[13])
        return rows


class ArrayBatch:
    """Many points of one series as numpy columns (step -1 = none, epoch NaN = none), folded vectorised."""

    def __init__(self, step, value, timestamp, epoch):
        self.step, self.value, self.timestamp, self.epoch = step, value, timestamp, epoch

    @classmethod
    def from_tuples(cls, points):
        import numpy as np

        n = len(points)
        return cls(
            np.fromiter((-1 if p[0] is None else p[0] for p in points), np.int64, n),
            np.fromiter((p[1] for p in points), np.float64, n),
            np.fromiter((p[2] for p in points), np.float64, n),
            np.fromiter((math.nan if p[3] is None else p[3] for p in points), np.float64, n),
        )

    def __len__(self):
        return len(self.step)

    def resolve_steps(self, max_step):
        import numpy as np

        missing = self.step < 0
        if not missing.any():
            return
        first = 0 if max_step is None else max_step + 1
        if first > MAX_STEP - len(self) or self.step.max() > MAX_STEP - len(self):
            # Near 2**63 the int64 arithmetic below would overflow: the plain loop caps instead.
            steps = [None if s < 0 else s for s in self.step.tolist()]
            self.step = np.array(_next_steps(steps, first), dtype=np.int64)
            return
        # next_i = max(first, max over explicit j < i of step_j + 1 - nones_before_j) + nones_before_i
        nones_before = np.cumsum(missing) - missing
        floor = np.where(missing, first, self.step + 1 - nones_before)
        running = np.maximum.accumulate(np.r_[first, floor[:-1]])
        self.step = np.where(missing, running + nones_before, self.step)

    def point_params(self, series_id):
        import numpy as np

        return _interleave(
            [
                [series_id] * len(self),
                self.step.tolist(),
                ds.nullable_list(self.value, np.isnan(self.value)),
                self.timestamp.tolist(),
                ds.nullable_list(self.epoch, np.isnan(self.epoch)),
            ]
        )

    def binary_copy(self, series_id):
        """The rows as a PostgreSQL binary COPY body (NaN value / missing epoch as NULL), or None.

        Rows with a NULL are shorter, so the body is built as runs of rows of one layout in batch
        order (ids keep the batch order); None when the layouts alternate too often to be worth it.
        """
        import numpy as np

        null_value, null_epoch = np.isnan(self.value), np.isnan(self.epoch)
        layout = null_value.astype(np.int8) * 2 + null_epoch
        starts = np.flatnonzero(np.r_[True, layout[1:] != layout[:-1]])
        if len(starts) > 64:
            return None
        parts = [b"PGCOPY\n\xff\r\n\x00" + bytes(8)]  # signature, flags, header extension length
        bounds = [*starts.tolist(), len(self)]
        for start, end in zip(bounds, bounds[1:], strict=False):
            parts.append(_copy_rows(series_id, self, start, end, bool(null_value[start]), bool(null_epoch[start])))
        parts.append(b"\xff\xff")  # trailer
        return b"".join(parts)

    def summary(self):
        import numpy as np

        n = len(self)
        finite = np.isfinite(self.value)
        n_finite = int(np.count_nonzero(finite))
        if n_finite == n:
            lo, hi = float(self.value.min()), float(self.value.max())
        elif n_finite:
            lo, hi = float(self.value[finite].min()), float(self.value[finite].max())
        else:
            lo = hi = None
        i = n - 1 - int(np.argmax(self.step[::-1]))  # highest step; among equal steps, the later point
        epoch = float(self.epoch[i])
        last = (int(self.step[i]), float(self.value[i]), float(self.timestamp[i]), None if epoch != epoch else epoch)
        return n, n - n_finite, lo, hi, float(self.timestamp.min()), last

    def bucket_params(self, series_id):
        params = []
        for level, aggs in ds.aggregate_columns(self.step, self.value, self.timestamp, self.epoch, BUCKET_LEVELS):
            params += _interleave(ds.agg_columns(aggs, series_id, level))
        return params


def _copy_rows(series_id, batch, start, end, null_value, null_epoch):
    """Binary COPY tuples of rows [start, end), all with the same NULL columns."""
    import numpy as np

    fields = [("n", ">i2"), ("sid_len", ">i4"), ("sid", ">i8"), ("step_len", ">i4"), ("step", ">i8"),
              ("value_len", ">i4")]  # fmt: skip
    fields += [] if null_value else [("value", ">f8")]
    fields += [("ts_len", ">i4"), ("ts", ">f8"), ("epoch_len", ">i4")]
    fields += [] if null_epoch else [("epoch", ">f8")]
    rows = np.empty(end - start, dtype=fields)
    rows["n"] = 5
    rows["sid_len"] = rows["step_len"] = rows["ts_len"] = 8
    rows["sid"] = series_id
    rows["step"] = batch.step[start:end]
    rows["value_len"] = -1 if null_value else 8
    if not null_value:
        rows["value"] = batch.value[start:end]
    rows["ts"] = batch.timestamp[start:end]
    rows["epoch_len"] = -1 if null_epoch else 8
    if not null_epoch:
        rows["epoch"] = batch.epoch[start:end]
    return rows.tobytes()


def batch_of(points):
    """The batch class that folds `points` ((step|None, value, timestamp, epoch) tuples) fastest."""
    return SmallBatch(points) if len(points) < SMALL_BATCH else ArrayBatch.from_tuples(points)


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
    # Aggregates stay tuples (read only from here on); only a NULL non-finite value needs a list, to become NaN.
    nf_step, nf_value = 1 + ds.NF_STEP, 1 + ds.NF_VALUE
    out = [(row[0] << level, row[1:]) for row in rows]
    for i, row in enumerate(rows):
        if row[nf_step] is not None and row[nf_value] is None:
            agg = list(row[1:])
            agg[ds.NF_VALUE] = math.nan
            out[i] = (row[0] << level, agg)
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
    if len(items) <= groups:
        aggs = [agg for _first, agg in items]  # a bucket per interval already: ≤ 2 points each
    else:
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
    if nonfinite:
        merged = sorted(finite + [(s, None, t, e) for s, _v, t, e in nonfinite], key=lambda p: p[0])
    else:
        merged = finite  # already in step order
    xs = [p[pick] for p in merged]
    ys = [p[1] for p in merged]  # None marks a non-finite point (JSON has no NaN)
    steps = [p[0] for p in merged]
    nf = [{"x": p[pick], "step": p[0], "value": ds.nonfinite_label(p[1])} for p in nonfinite]
    answer.update(
        x=xs, y=ys, steps=steps, nonfinite=nf, total_points=total, returned_points=len(xs),
        downsampled=level is not None, level=level, range=[lo, hi],
    )  # fmt: skip
    return answer
