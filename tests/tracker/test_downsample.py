import math

from tracker import downsample as ds


def test_it_keeps_every_interval_min_and_max_so_spikes_survive():
    points = [(i, math.sin(i / 50), float(i), None) for i in range(100_000)]
    points[54_321] = (54_321, 99.0, 54_321.0, None)
    points[77_777] = (77_777, -99.0, 77_777.0, None)
    finite, nonfinite = ds.downsample_points(points, 1000)
    assert len(finite) <= 1000 and not nonfinite
    values = [p[1] for p in finite]
    assert 99.0 in values and -99.0 in values
    assert [p[0] for p in finite] == sorted(p[0] for p in finite)


def test_it_is_deterministic():
    points = [((i * 7919) % 10_007, float((i * 31) % 97), 0.0, None) for i in range(10_007)]
    points.sort()
    assert ds.downsample_points(points, 500) == ds.downsample_points(points, 500)


def test_it_returns_everything_when_few_points():
    points = [(0, 1.0, 0.0, None), (1, math.nan, 1.0, None), (2, math.inf, 2.0, None)]
    finite, nonfinite = ds.downsample_points(points, 10)
    assert finite == [points[0]] and nonfinite == points[1:]


def test_it_merges_aggregates_in_any_order_to_the_same_result():
    points = [(i, float((i * 13) % 17), 0.0, None) for i in range(64)]
    whole = ds.aggregate(points, 6)[0]
    a = ds.aggregate(points[:20], 6)[0]
    b = ds.aggregate(points[20:], 6)[0]
    assert ds.merge_into(list(b), a) == ds.merge_into(list(a), b) == whole


def test_it_coarsens_finer_levels_to_the_direct_aggregate():
    points = [(i, float((i * 37) % 101) - 50, 0.0, 1.0) for i in range(4096)] + [(100, math.nan, 0.0, None)]
    points.sort(key=lambda p: p[0])
    assert ds.coarsen(ds.aggregate(points, 4), 4) == ds.aggregate(points, 8)


def test_it_parses_values_and_labels_nonfinite():
    assert ds.parse_value(2) == 2.0 and math.isnan(ds.parse_value("NaN"))
    assert ds.parse_value("Infinity") == math.inf and ds.parse_value("-Infinity") == -math.inf
    for bad in ("abc", True, None, [1], 10**400):
        try:
            ds.parse_value(bad)
        except ValueError:
            pass
        else:
            raise AssertionError(bad)
    assert [ds.nonfinite_label(v) for v in (math.nan, math.inf, -math.inf, 1.0)] == ["NaN", "Infinity", "-Infinity", None]


def test_it_aggregates_identically_with_and_without_numpy():
    import random

    rng = random.Random(3)
    points = [(rng.randrange(0, 5000), float(rng.randrange(0, 20)), float(i), None) for i in range(4000)]
    points += [(rng.randrange(0, 5000), v, 0.0, 1.0) for v in (math.nan, math.inf, -math.inf) * 20]
    points.sort(key=lambda p: p[0])
    for shift in (4, 8):
        fast = ds._aggregate_numpy(points, shift)
        slow = {}
        for step, value, ts, epoch in points:
            slow.setdefault(step >> shift, ds.empty_agg())
            ds.add_point(slow[step >> shift], step, value, ts, epoch)
        assert fast == slow
