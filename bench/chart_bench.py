"""Chart reads of a 1,000,000-point series: full view at 2,000 points, zoomed ranges, CSV memory.

    .venv/bin/python bench/chart_bench.py [--points 1000000] [--reps 15]

Uses a throwaway data dir (embedded SQLite). Server time is measured around
the view through Django's test client (query + downsampling + JSON), median
of --reps runs, wall and CPU. The comparison is a plain GROUP BY over the
raw rows, the query a store without the multi-resolution summary would run.
"""

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def timed(fn, reps):
    walls, cpus = [], []
    result = None
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls) * 1000, statistics.median(cpus) * 1000, result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args()
    os.environ["TORCHLIGHT_DATA_DIR"] = tempfile.mkdtemp(prefix="tl-chart-bench-")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client

    settings.ALLOWED_HOSTS = ["*"]
    call_command("migrate", verbosity=0)
    from django.contrib.auth import get_user_model

    from tracker import metric_store
    from tracker.models import Experiment, MetricSeries, Role, Run, Workspace

    user = get_user_model().objects.create_user("bench", password="x-bench-password-1")
    ws = Workspace.objects.create(name="Bench", slug="bench")
    ws.add_member(user, Role.OWNER)
    run = Run.objects.create(experiment=Experiment.objects.create(workspace=ws, name="b"), name="big", created_by=user)
    n = args.points
    t0 = time.perf_counter()
    for start in range(0, n, 50_000):
        batch = [["loss", 50.0 if i == n // 3 else math.sin(i / 5000), i, 1.7e9 + i, None]
                 for i in range(start, min(n, start + 50_000))]
        metric_store.ingest(run, batch)
    load_s = time.perf_counter() - t0
    series = MetricSeries.objects.get(run=run, key="loss")
    client = Client()
    client.force_login(user)
    base = f"/runs/{run.id}/metrics/loss.json"

    def view(query):
        def call():
            response = client.get(f"{base}?{query}")
            assert response.status_code == 200
            return response.json()

        return call

    rows = []
    full = timed(view("points=2000"), args.reps)
    rows.append(("full series → 2,000 points (view + JSON)", *full[:2], full[2]["returned_points"], full[2]["total_points"]))
    assert max(full[2]["y"]) == 50.0, "the spike must survive"
    mid = n // 2
    zoom = timed(view(f"points=2000&from={mid}&to={mid + 9_999}"), args.reps)
    rows.append(("zoom: 10,000 raw points → ≤ 2,000", *zoom[:2], zoom[2]["returned_points"], zoom[2]["total_points"]))
    raw = timed(view(f"points=2000&from={mid}&to={mid + 1_499}"), args.reps)
    rows.append(("zoom: 1,500 raw points (full resolution)", *raw[:2], raw[2]["returned_points"], raw[2]["total_points"]))
    live = timed(view(f"points=2000&since={n - 11}"), args.reps)
    rows.append(("live tail: since= (10 new points)", *live[:2], live[2]["returned_points"], live[2]["total_points"]))

    def group_by():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT step / 1000, MIN(value), MAX(value) FROM tracker_metricpoint WHERE series_id = %s "
                "GROUP BY step / 1000",
                [series.pk],
            )
            return cursor.fetchall()

    gb = timed(group_by, max(3, args.reps // 5))
    rows.append(("plain GROUP BY over the raw rows (comparison)", *gb[:2], len(gb[2]), n))

    def csv_peak(limit):
        from tracker.chart_views import csv_rows

        tracemalloc.start()
        count = 0
        for part in csv_rows(series):
            count += part.count("\n")
            if count > limit:
                break
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak / 1e6, count

    small_peak, _ = csv_peak(100_000)
    big_peak, lines = csv_peak(n + 1)

    print(f"\nseries: {n:,} points (loaded in {load_s:.1f} s); load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores\n")
    print("| request | median wall ms | median CPU ms | returned | total in range |")
    print("|---|---:|---:|---:|---:|")
    for name, wall, cpu, returned, total in rows:
        print(f"| {name} | {wall:.1f} | {cpu:.1f} | {returned:,} | {total:,} |")
    print(f"\nfull view vs GROUP BY: {gb[0] / full[0]:.0f}× faster (wall)")
    print(f"CSV export peak Python memory: {small_peak:.1f} MB after 100,000 rows, {big_peak:.1f} MB for all "
          f"{lines - 1:,} rows (flat: read in keyset chunks)")


if __name__ == "__main__":
    main()
