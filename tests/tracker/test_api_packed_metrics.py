"""POST /api/v1/runs/<id>/metrics with the packed body (application/vnd.torchlight.points)."""

import math
import struct

import pytest

from tracker import metric_store
from tracker.client import wire
from tracker.models import ApiToken, MetricBucket, MetricPoint, MetricSeries


@pytest.fixture
def post_packed(client):
    """post_packed(user, run, body, **headers) → response, with a bearer token of `user`."""

    def _post(user, run, body, **headers):
        raw = ApiToken.mint(user, "test")[1]
        return client.post(
            f"/api/v1/runs/{run.id}/metrics", data=body, content_type=wire.CONTENT_TYPE,
            HTTP_AUTHORIZATION=f"Bearer {raw}", **headers,
        )  # fmt: skip

    return _post


def assert_invalid_body(response, words):
    assert response.status_code == 400, response.content[:300]
    error = response.json()["error"]
    assert error["code"] == "invalid_body" and words in error["message"], error
    assert MetricPoint.objects.count() == 0 and MetricSeries.objects.count() == 0


@pytest.mark.django_db
def test_it_stores_a_packed_batch_with_nan_infinities_and_missing_steps(post_packed, owner, run):
    body = wire.encode_points(
        [
            ("loss", 2.0, 0, 100.0, None),
            ("loss", math.nan, 1, 101.0, 0.5),
            ("acc", math.inf, None, 102.0, None),
            ("loss", -math.inf, None, 103.0, None),  # one past the highest: 2
        ]
    )
    response = post_packed(owner, run, body)
    assert response.status_code == 200
    assert response.json() == {"stored": 4, "errors": [], "duplicate": False}
    loss = list(metric_store.read_history(run, "loss"))
    assert [p[0] for p in loss] == [0, 1, 2]
    assert loss[0][1] == 2.0 and math.isnan(loss[1][1]) and loss[2][1] == -math.inf
    assert loss[1][3] == 0.5 and loss[0][3] is None
    assert list(metric_store.read_history(run, "acc")) == [(0, math.inf, 102.0, None)]
    series = MetricSeries.objects.get(run=run, key="loss")
    assert (series.count, series.nonfinite_count, series.min_value, series.last_step) == (3, 2, 2.0, 2)


@pytest.mark.django_db
def test_it_stores_the_same_as_the_json_body(api_json, post_packed, owner, make_run):
    points = [
        (f"k{i % 3}", math.sin(i) if i % 97 else math.nan, i // 3 if i % 11 else None, 1000.0 + i, i / 7 if i % 2 else None)
        for i in range(3 * metric_store.SMALL_BATCH)
    ]
    via_json, via_packed = make_run(name="json"), make_run(name="packed")
    compact = [[k, "NaN" if v != v else v, s, t, e] for k, v, s, t, e in points]
    assert api_json(owner, via_json, {"points": compact}).json()["stored"] == len(points)
    assert post_packed(owner, via_packed, wire.encode_points(points)).json()["stored"] == len(points)
    for key in ("k0", "k1", "k2"):
        a, b = (MetricSeries.objects.get(run=r, key=key) for r in (via_json, via_packed))
        fields = ("count", "nonfinite_count", "min_value", "max_value", "last_step", "last_value", "max_step")
        assert [getattr(a, f) for f in fields] == [getattr(b, f) for f in fields]
        history = [list(metric_store.read_history(r, key)) for r in (via_json, via_packed)]
        assert [(s, repr(v), t, e) for s, v, t, e in history[0]] == [(s, repr(v), t, e) for s, v, t, e in history[1]]
        buckets = [
            list(MetricBucket.objects.filter(series=s).order_by("level", "bucket").values_list(
                "level", "bucket", "count", "min_step", "max_step", "nf_step"))
            for s in (a, b)
        ]  # fmt: skip
        assert buckets[0] == buckets[1]


@pytest.mark.django_db
def test_it_reports_each_bad_point_and_stores_the_good_ones(post_packed, owner, run):
    body = wire.encode_points(
        [
            ("loss", 1.0, 0, 100.0, None),
            ("bad\x01key", 1.0, 1, 100.0, None),
            ("loss", 1.0, -7, 100.0, None),
            ("loss", 1.0, 2, math.nan, None),
            ("loss", 1.0, 3, -1.0, None),
            ("loss", 1.0, 4, 100.0, math.inf),
            ("k" * 251, 1.0, 5, 100.0, None),
            ("", 1.0, 6, 100.0, None),
            ("loss", 2.0, 7, 100.0, 1.0),
        ]
    )
    answer = post_packed(owner, run, body).json()
    assert answer["stored"] == 2 and answer["duplicate"] is False
    assert {e["index"]: e["code"] for e in answer["errors"]} == {
        1: "invalid_key", 2: "invalid_step", 3: "invalid_timestamp", 4: "invalid_timestamp", 5: "invalid_epoch",
        6: "key_too_long", 7: "missing_key",
    }  # fmt: skip
    assert all(e["message"] for e in answer["errors"])
    assert [p[0] for p in metric_store.read_history(run, "loss")] == [0, 7]


def _header(n_keys, n_points, magic=b"TLP1"):
    return struct.pack("<4sII", magic, n_keys, n_points)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"TLP2" + wire.encode_points([("a", 1.0, 0, 1.0, None)])[4:], "TLP1"),
        (wire.encode_points([("a", 1.0, 0, 1.0, None)])[:-3], "truncated"),
        (wire.encode_points([("a", 1.0, 0, 1.0, None)]) + b"\x00", "trailing bytes"),
        (_header(1, 1) + b"\x01\x00a" + struct.pack("<I", 1) + struct.pack("<dqdd", 1.0, 0, 1.0, 0.0), "key_index"),
        (_header(1, 1) + b"\x02\x00\xff\xfe" + struct.pack("<I", 0) + struct.pack("<dqdd", 1.0, 0, 1.0, 0.0),
         "UTF-8"),
        (b"TL", "12-byte header"),
    ],
)  # fmt: skip
def test_it_refuses_a_malformed_body_and_stores_nothing(post_packed, owner, run, body, words):
    assert_invalid_body(post_packed(owner, run, body), words)


@pytest.mark.django_db
def test_it_refuses_a_batch_over_the_cap_with_413(post_packed, owner, run):
    n = metric_store.MAX_POINTS_PER_BATCH + 1
    body = _header(1, n) + b"\x01\x00a" + b"\x00" * (4 * n) + b"\x00" * (32 * n)
    response = post_packed(owner, run, body)
    assert response.status_code == 413 and response.json()["error"]["code"] == "batch_too_large"
    assert MetricPoint.objects.count() == 0


@pytest.mark.django_db
def test_it_stores_a_repeated_idempotency_key_once(post_packed, owner, run):
    body = wire.encode_points([("a", 1.0, 0, 1.0, None), ("a", 2.0, -5, 1.0, None)])
    first = post_packed(owner, run, body, HTTP_IDEMPOTENCY_KEY="batch-1").json()
    again = post_packed(owner, run, body, HTTP_IDEMPOTENCY_KEY="batch-1").json()
    assert first["stored"] == 1 and not first["duplicate"]
    assert again == {**first, "duplicate": True}
    assert MetricPoint.objects.count() == 1
    response = post_packed(owner, run, body, HTTP_IDEMPOTENCY_KEY="k" * 201)
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_body"
    assert MetricPoint.objects.count() == 1


@pytest.mark.django_db
def test_it_gives_readers_403_and_other_workspaces_404(post_packed, reader, outsider, run):
    body = wire.encode_points([("a", 1.0, 0, 1.0, None)])
    assert post_packed(reader, run, body).status_code == 403
    assert post_packed(outsider, run, body).status_code == 404
    assert MetricPoint.objects.count() == 0


@pytest.fixture
def api_json(client):
    def _post(user, run, data):
        raw = ApiToken.mint(user, "test")[1]
        return client.post(
            f"/api/v1/runs/{run.id}/metrics", data=data, content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {raw}",
        )  # fmt: skip

    return _post


@pytest.mark.django_db
def test_it_stores_a_key_listed_twice_in_the_key_table_as_one_series(post_packed, owner, run):
    key = b"loss"
    body = (
        _header(2, 3) + struct.pack("<H", 4) + key + struct.pack("<H", 4) + key + struct.pack("<3I", 0, 1, 0)
        + struct.pack("<3d", 1.0, 2.0, 3.0) + struct.pack("<3q", 0, 1, 2) + struct.pack("<3d", 1.0, 1.0, 1.0)
        + struct.pack("<3d", math.nan, math.nan, math.nan)
    )  # fmt: skip
    assert post_packed(owner, run, body).json()["stored"] == 3
    assert [(s, v) for s, v, _t, _e in metric_store.read_history(run, "loss")] == [(0, 1.0), (1, 2.0), (2, 3.0)]
    assert MetricSeries.objects.get(run=run, key="loss").count == 3
