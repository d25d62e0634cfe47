import math

import pytest

from tracker import metric_store
from tracker.models import IngestBatch, MetricBucket, MetricPoint, MetricSeries


def pts(key, values, start=0):
    return [{"key": key, "value": v, "step": start + i, "timestamp": 1000.0 + start + i} for i, v in enumerate(values)]


@pytest.mark.django_db
def test_it_stores_points_and_reads_them_back_in_step_order(run):
    result = metric_store.ingest(run, pts("loss", [3.0, 2.0, 1.0]))
    assert result.stored == 3 and result.errors == [] and not result.duplicate
    history = list(metric_store.read_history(run, "loss"))
    assert [(s, v) for s, v, _t, _e in history] == [(0, 3.0), (1, 2.0), (2, 1.0)]
    series = MetricSeries.objects.get(run=run, key="loss")
    assert (series.count, series.last_value, series.min_value, series.max_value) == (3, 1.0, 1.0, 3.0)


@pytest.mark.django_db
def test_it_stores_nan_and_infinities_as_such(run):
    metric_store.ingest(run, pts("x", ["NaN", "Infinity", "-Infinity", 1.5]))
    values = [v for _s, v, _t, _e in metric_store.read_history(run, "x")]
    assert math.isnan(values[0]) and values[1] == math.inf and values[2] == -math.inf and values[3] == 1.5
    series = MetricSeries.objects.get(run=run, key="x")
    assert series.nonfinite_count == 3 and series.min_value == 1.5 and series.max_value == 1.5


@pytest.mark.django_db
def test_it_reports_each_bad_point_and_stores_the_good_ones(run):
    points = [
        {"key": "loss", "value": 1.0, "step": 0},
        {"key": "loss", "value": "abc", "step": 1},
        {"value": 1.0, "step": 2},
        {"key": "k" * 251, "value": 1.0},
        {"key": "loss", "value": 1.0, "step": -1},
        {"key": "loss", "value": 1.0, "step": 2**63},
        {"key": "loss", "value": 2.0, "step": 5},
        "junk",
        {"key": "loss", "value": True},
        {"key": "loss", "value": 1.0, "timestamp": "yesterday"},
    ]
    result = metric_store.ingest(run, points)
    assert result.stored == 2
    codes = {e["index"]: e["code"] for e in result.errors}
    assert codes == {
        1: "invalid_value", 2: "missing_key", 3: "key_too_long", 4: "invalid_step", 5: "invalid_step",
        7: "invalid_point", 8: "invalid_value", 9: "invalid_timestamp",
    }  # fmt: skip
    assert all(e["message"] for e in result.errors)
    assert [s for s, *_ in metric_store.read_history(run, "loss")] == [0, 5]


@pytest.mark.django_db
def test_it_accepts_the_largest_step(run):
    assert metric_store.ingest(run, [{"key": "a", "value": 1, "step": 2**63 - 1}]).stored == 1
    assert list(metric_store.read_history(run, "a"))[0][0] == 2**63 - 1


@pytest.mark.django_db
def test_it_refuses_a_batch_over_the_cap_and_stores_nothing(run):
    with pytest.raises(metric_store.BatchTooLarge):
        metric_store.ingest(run, pts("a", [1.0] * (metric_store.MAX_POINTS_PER_BATCH + 1)))
    assert MetricPoint.objects.count() == 0


@pytest.mark.django_db
def test_it_numbers_steps_after_the_highest_when_step_is_missing(run):
    metric_store.ingest(run, pts("a", [1.0, 2.0], start=10))
    metric_store.ingest(run, [{"key": "a", "value": 3.0}, {"key": "a", "value": 4.0}, {"key": "b", "value": 0.0}])
    assert [s for s, *_ in metric_store.read_history(run, "a")] == [10, 11, 12, 13]
    assert [s for s, *_ in metric_store.read_history(run, "b")] == [0]


@pytest.mark.django_db
def test_it_stores_a_repeated_idempotency_key_once(run):
    first = metric_store.ingest(run, pts("a", [1.0, "abc"]), idempotency_key="batch-1")
    again = metric_store.ingest(run, pts("a", [1.0, "abc"]), idempotency_key="batch-1")
    third = metric_store.ingest(run, pts("a", [1.0, "abc"]), idempotency_key="batch-1")
    assert first.stored == 1 and not first.duplicate
    assert again.duplicate and third.duplicate and again.stored == 1 and again.errors == first.errors
    assert MetricPoint.objects.count() == 1
    assert IngestBatch.objects.filter(run=run).count() == 1


@pytest.mark.django_db
def test_it_keeps_bucket_summaries_equal_to_a_recount_across_batches(run):
    import random

    rng = random.Random(7)
    values = [rng.gauss(0, 1) for _ in range(3000)]
    values[1234] = 50.0  # a spike
    values[2000] = "NaN"
    # out of order and in uneven batches
    batches = [pts("v", values[i : i + 700], start=i) for i in range(0, 3000, 700)]
    for batch in reversed(batches):
        metric_store.ingest(run, batch)
    series = MetricSeries.objects.get(run=run, key="v")
    for level in (4, 8, 12):
        rows = MetricBucket.objects.filter(series=series, level=level)
        assert sum(r.count for r in rows) == 3000
        spike = rows.get(bucket=1234 >> level)
        assert spike.max_value == 50.0 and spike.max_step == 1234
        nan_bucket = rows.get(bucket=2000 >> level)
        assert nan_bucket.nonfinite_count == 1 and nan_bucket.nf_step == 2000 and nan_bucket.nf_value is None
        for r in rows:
            finite = [(v, s) for s, v in enumerate(values) if s >> level == r.bucket and not isinstance(v, str)]
            assert r.min_value == min(finite)[0] and r.max_value == max(finite)[0]
    assert series.max_value == 50.0 and series.count == 3000 and series.nonfinite_count == 1


@pytest.mark.django_db
def test_it_counts_points_in_any_step_range_exactly(run):
    metric_store.ingest(run, pts("v", [float(i) for i in range(5000)]))
    metric_store.ingest(run, pts("v", [1.0, 2.0], start=100))  # duplicate steps count too
    series = MetricSeries.objects.get(run=run, key="v")
    for lo, hi in [(0, 4999), (3, 17), (15, 4097), (100, 100), (4000, 9000), (17, 16)]:
        expected = sum(1 for s in range(lo, min(hi, 4999) + 1)) + sum(1 for s in (100, 101) if lo <= s <= hi)
        assert metric_store.count_range(series, lo, hi) == expected


@pytest.mark.django_db
def test_it_reads_history_in_chunks_with_duplicate_steps(run):
    metric_store.ingest(run, pts("v", [1.0] * 25))
    metric_store.ingest(run, pts("v", [2.0] * 25))
    series = MetricSeries.objects.get(run=run, key="v")
    got = list(metric_store.iter_points(series.pk, chunk=7))
    assert len(got) == 50 and [p[0] for p in got] == sorted(p[0] for p in got)
    assert len(list(metric_store.read_history(run, "v", start_step=10, end_step=12))) == 6
    assert len(list(metric_store.read_history(run, "v", limit=9))) == 9
