"""Page speed: the experiment page with 10,000 runs x 20 metric keys, and a run page with 20 keys.

    .venv/bin/python bench/pages_bench.py [--runs 10000] [--keys 20] [--requests 60] [--plans]

Builds a throwaway SQLite database in its own TORCHLIGHT_DATA_DIR (bulk_create,
about a minute): the "big" experiment, plus a few smaller experiments with the
same metric and param keys so query plans face realistic data. Then times pages
through Django's test client (the full middleware + view + template stack, no
network) and prints p50/p95 and the SQL query count of each. Target: p95 < 150 ms.
`--plans` also prints SQLite's EXPLAIN QUERY PLAN of every query the experiment
page cases send (experiment ids as bound parameters, as Django sends them).
"""

import argparse
import functools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def setup_django(data_dir, database_url=None):
    os.environ["TORCHLIGHT_DATA_DIR"] = str(data_dir)
    os.environ.pop("DATABASE_URL", None)
    if database_url:
        os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.test.utils import setup_test_environment

    setup_test_environment()  # allows the test client's "testserver" host
    call_command("migrate", verbosity=0)


OTHER_EXPERIMENTS = (("small-a", 300), ("small-b", 1000), ("small-c", 3000))


def build(runs, keys):
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction

    from tracker.models import Experiment, Role, Workspace

    user = get_user_model().objects.create_user("bench", password="bench-password-not-secret")
    workspace = Workspace.objects.create(name="Bench", slug="bench")
    workspace.add_member(user, Role.OWNER)
    metric_keys = ["loss", "acc", "val/loss"] + [f"metric_{i:02d}" for i in range(keys - 3)]
    started = time.perf_counter()
    with transaction.atomic():
        # The other experiments first, so the big one's rows are not simply the first ones in every table.
        for name, count in OTHER_EXPERIMENTS:
            other = Experiment.objects.create(workspace=workspace, name=name, created_by=user)
            fill_experiment(other, user, count, metric_keys)
        experiment = Experiment.objects.create(workspace=workspace, name="big", created_by=user)
        made = fill_experiment(experiment, user, runs, metric_keys)
    others = sum(count for _name, count in OTHER_EXPERIMENTS)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")  # what autovacuum does soon after a bulk load
    print(f"built {runs} runs x {len(metric_keys)} metric keys (+{others} runs in {len(OTHER_EXPERIMENTS)} other "
          f"experiments) in {time.perf_counter() - started:.1f}s")
    return user, experiment, made


def fill_experiment(experiment, user, runs, metric_keys):
    from tracker.models import MetricSeries, Param, Run, RunStatus

    statuses = [RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.RUNNING, RunStatus.CANCELED]
    made = Run.objects.bulk_create(
        [Run(experiment=experiment, name=f"run-{i:05d}", created_by=user, status=statuses[i % 4])
         for i in range(runs)],
        batch_size=2000,
    )
    series = []
    for i, run in enumerate(made):
        for k, key in enumerate(metric_keys):
            value = ((i * 7919 + k * 104729) % 10007) / 10007
            series.append(MetricSeries(run=run, key=key, count=1000, last_step=999, last_value=value,
                                       min_value=value / 2, max_value=value * 2, max_step=999))
        if len(series) >= 20000:
            MetricSeries.objects.bulk_create(series, batch_size=5000)
            series = []
    MetricSeries.objects.bulk_create(series, batch_size=5000)
    Param.objects.bulk_create(
        [Param(run=run, key=key, value=f"{key}-{i % 13}") for i, run in enumerate(made)
         for key in ("lr", "optimizer", "batch_size", "seed")],
        batch_size=5000,
    )
    return made


def record_query(sent, execute, sql, params, many, context):
    sent.append((sql, params))
    return execute(sql, params, many, context)


def print_plans(client, cases):
    """The plan of each series/param/count query of the experiment page cases, parameters bound as Django binds them."""
    from django.db import connection

    for label, url in cases:
        if not url.startswith("/experiments/"):
            continue
        sent = []
        with connection.execute_wrapper(functools.partial(record_query, sent)):
            client.get(url)
        print(f"\n### {label}")
        for sql, params in sent:
            if "tracker_metricseries" not in sql and "tracker_param" not in sql and "COUNT" not in sql:
                continue
            print(f"\n{sql[:400]}{' …' if len(sql) > 400 else ''}\n  params: {list(params or ())[:12]}")
            explain = "EXPLAIN QUERY PLAN" if connection.vendor == "sqlite" else "EXPLAIN"
            with connection.cursor() as cursor:
                cursor.execute(f"{explain} {sql}", params)
                for row in cursor.fetchall():
                    print(f"    {row[-1]}")


def measure(client, url, requests):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    queries = len(ctx.captured_queries)
    for _ in range(3):  # warm caches
        client.get(url)
    times, cpu = [], []
    for _ in range(requests):
        started, started_cpu = time.perf_counter(), time.process_time()
        response = client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - started_cpu) * 1000)
        assert response.status_code == 200
    return percentiles(times), percentiles(cpu), queries


def percentiles(values):
    values = sorted(values)
    return statistics.median(values), values[max(0, int(round(0.95 * len(values))) - 1)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--keys", type=int, default=20)
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--data-dir", help="keep the database here and reuse it on the next run (default: a temp dir)")
    parser.add_argument("--plans", action="store_true", help="print the query plans of the experiment page cases")
    parser.add_argument("--database-url", help="a PostgreSQL database to fill instead of SQLite (its tables are reused)")
    args = parser.parse_args()
    if args.data_dir:
        Path(args.data_dir).mkdir(parents=True, exist_ok=True)
        run_bench(args, args.data_dir)
    else:
        with tempfile.TemporaryDirectory(prefix="torchlight-pages-bench-") as data_dir:
            run_bench(args, data_dir)


def run_bench(args, data_dir):
    setup_django(data_dir, args.database_url)
    if True:
        from django.test import Client

        from tracker.models import Experiment, Run

        experiment = Experiment.objects.filter(name="big", runs__isnull=False).first()
        if experiment is None:
            user, experiment, runs = build(args.runs, args.keys)
        else:
            user = experiment.created_by
            runs = list(Run.objects.filter(experiment=experiment).order_by("name")[:20])
            print(f"reusing the database in {data_dir}")
        client = Client()
        client.force_login(user)
        columns = "metrics=loss,acc,val/loss&params=lr,optimizer"
        base = f"/experiments/{experiment.pk}/"
        cases = [
            ("experiment page, newest first, 5 columns", f"{base}?{columns}"),
            ("experiment page, sorted by -metrics.loss", f"{base}?{columns}&sort=-metrics.loss"),
            ("experiment page, sorted by metrics.acc, last page", f"{base}?{columns}&sort=metrics.acc&page=200"),
            ("experiment page, sorted by params.optimizer", f"{base}?{columns}&sort=params.optimizer"),
            ("experiment page, filter metrics.loss < 0.5 and params.optimizer = 'optimizer-3'",
             f"{base}?{columns}&sort=-metrics.loss&filter=metrics.loss+%3C+0.5+and+params.optimizer+%3D+%27optimizer-3%27"),
            (f"run page, {args.keys} metric keys", f"/runs/{runs[17].id}/"),
            ("compare page, 5 runs", "/compare/?runs=" + ",".join(str(r.id) for r in runs[:5])),
        ]
        if args.plans:
            print_plans(client, cases)
        # Wall time includes waiting for a CPU on a busy machine; CPU time (this process: view,
        # templates and SQLite, all in-process) is what the request costs on an idle one.
        print(f"\n| page ({args.runs} runs x {args.keys} keys) | wall p50 ms | wall p95 ms | CPU p50 ms | CPU p95 ms "
              "| SQL queries |")
        print("|---|---:|---:|---:|---:|---:|")
        worst = 0.0
        for label, url in cases:
            (p50, p95), (c50, c95), queries = measure(client, url, args.requests)
            worst = max(worst, p95)
            print(f"| {label} | {p50:.1f} | {p95:.1f} | {c50:.1f} | {c95:.1f} | {queries} |")
        load = os.getloadavg()
        print(f"\nload average while measuring: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} CPUs")
        print(f"worst wall p95: {worst:.1f} ms (target < 150 ms): {'OK' if worst < 150 else 'TOO SLOW'}")


if __name__ == "__main__":
    main()
