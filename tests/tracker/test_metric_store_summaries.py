"""The write path's summaries (series row, buckets) against a recount of every point stored.

Small batches are folded in Python, large ones with numpy, and buckets are merged in SQL:
whatever the path, the stored summaries must equal an aggregate of all points read back.
"""

import math
import random

import pytest

from tracker import downsample as ds
from tracker import metric_store
from tracker.models import BUCKET_LEVELS, MetricBucket, MetricSeries


def recount(points, level):
    """Buckets of `level` computed point by point (the reference: plain Python, no numpy)."""
    out = {}
    for step, value, ts, epoch in points:
        agg = out.get(step >> level)
        if agg is None:
            agg = out[step >> level] = ds.empty_agg()
        ds.add_point(agg, step, value, ts, epoch)
    return out


def stored_buckets(series, level):
    out = {}
    for b in MetricBucket.objects.filter(series=series, level=level):
        agg = [getattr(b, c) for c in metric_store.BUCKET_COLUMNS]
        if agg[ds.NF_STEP] is not None and agg[ds.NF_VALUE] is None:
            agg[ds.NF_VALUE] = math.nan
        out[b.bucket] = agg
    return out


def same(a, b):
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def assert_summaries_match(run, key):
    series = MetricSeries.objects.get(run=run, key=key)
    points = list(metric_store.read_history(run, key))
    for level in BUCKET_LEVELS:
        expected, got = recount(points, level), stored_buckets(series, level)
        assert sorted(got) == sorted(expected), f"level {level}: bucket ids differ"
        for b, agg in expected.items():
            # min/max/nf points: compare (step, value); timestamps follow the step.
            for i in (ds.COUNT, ds.NONFINITE, ds.MIN_STEP, ds.MIN_VALUE, ds.MAX_STEP, ds.MAX_VALUE, ds.NF_STEP):
                assert same(got[b][i], agg[i]), f"level {level} bucket {b} column {i}: {got[b][i]} != {agg[i]}"
            assert same(got[b][ds.NF_VALUE], agg[ds.NF_VALUE])
    finite = [v for _s, v, _t, _e in points if math.isfinite(v)]
    last = max(range(len(points)), key=lambda i: (points[i][0], -i))  # read order: step, then insertion
    assert series.count == len(points)
    assert series.nonfinite_count == len(points) - len(finite)
    assert (series.min_value, series.max_value) == ((min(finite), max(finite)) if finite else (None, None))
    assert series.first_timestamp == min(p[2] for p in points)
    assert series.max_step == series.last_step == points[last][0]
    return series, points


def random_batch(rng, size, start, with_missing_steps):
    batch = []
    for i in range(size):
        roll = rng.random()
        value = rng.gauss(0, 1) if roll > 0.06 else rng.choice(["NaN", "Infinity", "-Infinity", 3.0])
        step = start + rng.randrange(0, size * 2) if rng.random() < 0.5 else start + i
        if with_missing_steps and rng.random() < 0.2:
            step = None
        epoch = float(rng.randrange(5)) if rng.random() < 0.5 else None
        batch.append({"key": "v", "value": value, "step": step, "timestamp": 1000.0 + rng.random(), "epoch": epoch})
    return batch


@pytest.mark.django_db
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_it_keeps_summaries_equal_to_a_recount_for_small_and_large_batches(run, seed):
    rng = random.Random(seed)
    sizes = [1, 3, metric_store.SMALL_BATCH + 5, 1, 2000, 40, 700]
    start = 5000
    for size in sizes:
        metric_store.ingest(run, random_batch(rng, size, start, with_missing_steps=seed != 1))
        start = rng.randrange(0, 9000)
    assert_summaries_match(run, "v")


@pytest.mark.django_db
def test_it_numbers_missing_steps_the_same_in_small_and_large_batches(run):
    steps = [None, 4, None, None, 2, None, 10, None, 3, None]
    for key, repeat in (("small", 1), ("large", 60)):
        metric_store.ingest(run, [{"key": key, "value": 1.0, "step": 7}])
        points = [{"key": key, "value": 1.0, "step": s} for s in steps * repeat]
        metric_store.ingest(run, points)
    expected, next_step = [7], 8
    for s in steps * 60:
        s = next_step if s is None else s
        next_step = max(next_step, s + 1)
        expected.append(s)
    assert sorted(s for s, *_ in metric_store.read_history(run, "large")) == sorted(expected)
    assert sorted(s for s, *_ in metric_store.read_history(run, "small")) == sorted(expected[: len(steps) + 1])
    assert_summaries_match(run, "large")
    assert_summaries_match(run, "small")


@pytest.mark.django_db
def test_it_folds_single_points_into_the_summaries(run):
    metric_store.ingest(run, [{"key": "loss", "value": 2.0, "step": 0}])
    metric_store.ingest(run, [{"key": "loss", "value": "NaN", "step": 1}])
    result = metric_store.ingest(run, [{"key": "loss", "value": 1.0, "epoch": 0.5}])  # step: one past the highest
    assert result.stored == 1
    series, points = assert_summaries_match(run, "loss")
    assert (series.last_step, series.last_value, series.last_epoch, series.count) == (2, 1.0, 0.5, 3)
    assert series.nonfinite_count == 1 and (series.min_value, series.max_value) == (1.0, 2.0)
    metric_store.ingest(run, [{"key": "loss", "value": "NaN", "step": 9}])
    series = MetricSeries.objects.get(run=run, key="loss")
    assert series.last_step == 9 and series.last_value is None and math.isnan(series.last)


@pytest.mark.django_db
def test_it_stores_runs_of_nan_values_and_missing_epochs_exactly(run):
    # Blocks of one shape (PostgreSQL's binary COPY sends each block with its own row layout).
    n = 1200
    points = [
        {"key": "v", "value": "NaN" if 400 <= i < 450 else i / 3, "step": i, "timestamp": 1000.0 + i,
         "epoch": i / 100 if i < 600 else None}
        for i in range(n)
    ]  # fmt: skip
    assert metric_store.ingest(run, points).stored == n
    history = list(metric_store.read_history(run, "v"))
    assert [p[0] for p in history] == list(range(n))
    for i, (_step, value, ts, epoch) in enumerate(history):
        assert (math.isnan(value) if 400 <= i < 450 else value == i / 3) and ts == 1000.0 + i
        assert epoch == (i / 100 if i < 600 else None)
    assert_summaries_match(run, "v")
