"""Chart data for the run and compare pages (session auth; the API has token-auth twins).

`…/metrics/<key>.json?x=step|time|epoch&from=&to=&points=N&since=` answers
with at most about N points, every interval's min and max kept
(tracker.metric_store.chart_data); `…/metrics/<key>.csv` streams the full
history in step order with memory flat however long the series.
"""

import csv
import math
import uuid

from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import Http404, JsonResponse, StreamingHttpResponse
from django.utils.text import slugify
from django.views.decorators.http import require_GET

from tracker import metric_store
from tracker.access import get_run_for_user
from tracker.models import TERMINAL_STATUSES, MetricSeries, Run

DEFAULT_POINTS = 2000
MAX_POINTS = 20_000


class ChartArgsError(ValueError):
    pass


def _number(query, name):
    raw = query.get(name)
    if raw in (None, ""):
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ChartArgsError(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise ChartArgsError(f"{name} must be a finite number")
    return value


def parse_chart_args(query):
    """Keyword arguments for metric_store.chart_data from a query dict; ChartArgsError on junk."""
    x = query.get("x", "step") or "step"
    if x not in ("step", "time", "epoch"):
        raise ChartArgsError("x must be step, time or epoch")
    points = _number(query, "points")
    if points is None:
        points = DEFAULT_POINTS
    if not 2 <= points <= MAX_POINTS or points != int(points):
        raise ChartArgsError(f"points must be an integer between 2 and {MAX_POINTS}")
    since = _number(query, "since")
    if since is not None and (since != int(since) or since < -1):
        raise ChartArgsError("since must be a step (an integer ≥ -1)")
    start, end = _number(query, "from"), _number(query, "to")
    if start is not None and end is not None and start > end:
        raise ChartArgsError("from must not be after to")
    return {
        "x": x,
        "start": start,
        "end": end,
        "max_points": int(points),
        "since": int(since) if since is not None else None,
    }


def _bad_request(message):
    return JsonResponse({"error": {"code": "invalid_parameter", "message": message}}, status=400)


def _series_for_reader(user, run_id, key):
    """(whether the run is live, its MetricSeries `key` or None) when `user` may read the run; Http404 otherwise.

    Run, membership and series in one query where get_run_for_user + get_series
    take three with four joins: a live chart polls this every few seconds per
    metric, so the fixed cost is most of its time. Any membership may read.
    """
    try:
        run_pk = Run._meta.pk.get_db_prep_value(uuid.UUID(run_id), connection)
    except ValueError:
        raise Http404 from None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT r.status, m.role, s.id, s.count, s.max_step FROM tracker_run r "
            "JOIN tracker_experiment e ON e.id = r.experiment_id "
            "LEFT JOIN tracker_membership m ON m.workspace_id = e.workspace_id AND m.user_id = %s "
            "LEFT JOIN tracker_metricseries s ON s.run_id = r.id AND s.key = %s "
            "WHERE r.id = %s",
            [user.pk, key, run_pk],
        )
        row = cursor.fetchone()
    if row is None or row[1] is None:
        raise Http404
    status, _role, series_id, count, max_step = row
    series = None
    if series_id is not None:
        series = MetricSeries(id=series_id, run_id=run_pk, key=key, count=count, max_step=max_step)
    return status not in TERMINAL_STATUSES, series


@login_required
@require_GET
def metric_chart_json(request, run_id, key):
    live, series = _series_for_reader(request.user, run_id, key)
    try:
        args = parse_chart_args(request.GET)
    except ChartArgsError as exc:
        return _bad_request(str(exc))
    data = metric_store.chart_data(series, **args)
    data["key"] = key
    data["live"] = live
    return JsonResponse(data, json_dumps_params={"allow_nan": False})


class _Echo:
    def write(self, value):
        return value


def _csv_value(value):
    if math.isfinite(value):
        return repr(value)
    return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")


def csv_rows(series):
    """CSV lines of a series (header first), read in keyset chunks: memory stays flat."""
    writer = csv.writer(_Echo())
    yield writer.writerow(["step", "value", "timestamp", "epoch"])
    chunk = []
    for step, value, ts, epoch in metric_store.iter_points(series.pk):
        chunk.append(writer.writerow([step, _csv_value(value), repr(ts), "" if epoch is None else repr(epoch)]))
        if len(chunk) >= 2000:
            yield "".join(chunk)
            chunk = []
    if chunk:
        yield "".join(chunk)


@login_required
@require_GET
def metric_csv(request, run_id, key):
    run = get_run_for_user(request.user, run_id)
    series = metric_store.get_series(run, key)
    if series is None:
        return JsonResponse({"error": {"code": "not_found", "message": "metric not found"}}, status=404)
    response = StreamingHttpResponse(csv_rows(series), content_type="text/csv")
    filename = f"{slugify(run.display_name) or 'run'}-{slugify(key) or 'metric'}.csv"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
