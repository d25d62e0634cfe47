"""The experiment page's runs table: which columns, which rows, in which order.

Every chosen param and metric column is one correlated subquery annotation
(`RunQuerySet.with_param/with_metric`), so a page costs the same few SQL
queries whether the experiment has ten runs or ten thousand.
"""

from dataclasses import dataclass, field

from django.core.cache import cache
from django.core.paginator import Paginator
from django.db.models import DurationField, Exists, ExpressionWrapper, F, Max, OuterRef
from django.db.models.functions import Coalesce, Now

from tracker.models import MetricSeries, Param, Run, RunStatus
from tracker.run_filter import apply_filter

PAGE_SIZE = 50
MAX_COLUMNS = 30  # per kind; a URL asking for more is cut, not refused
MAX_CHOOSER_KEYS = 500
KEYS_CACHE_SECONDS = 600

ATTRIBUTE_SORTS = {
    "name": "name",
    "status": "status",
    "user": "created_by__username",
    "created": "created_at",
    "start": "start_time",
    "duration": "duration_sort",
}


def experiment_keys(experiment):
    """(param keys, metric keys) present in the experiment, for the column chooser.

    The DISTINCT scans read every series of the experiment (200,000 rows for
    10,000 runs x 20 keys), so the answer is cached under the highest series
    and param ids: any new key anywhere makes a new cache entry.
    """
    marks = (
        MetricSeries.objects.aggregate(top=Max("pk"))["top"],
        Param.objects.aggregate(top=Max("pk"))["top"],
    )
    stamp = experiment.created_at.timestamp()
    cache_key = f"torchlight:experiment-keys:{experiment.pk}:{stamp}:{marks[0]}:{marks[1]}"
    cached = cache.get(cache_key)
    if cached is not None:
        return cached
    keys = _distinct_keys(experiment)
    cache.set(cache_key, keys, KEYS_CACHE_SECONDS)
    return keys


def _distinct_keys(experiment):
    params = Param.objects.filter(run__experiment=experiment).order_by("key").values_list("key", flat=True).distinct()
    metrics = (
        MetricSeries.objects.filter(run__experiment=experiment).order_by("key").values_list("key", flat=True).distinct()
    )
    return list(params)[:MAX_CHOOSER_KEYS], list(metrics)[:MAX_CHOOSER_KEYS]


def split_keys(text):
    """'a,b, c' -> ['a', 'b', 'c'] (order kept, blanks and repeats dropped)."""
    seen = []
    for part in (text or "").split(","):
        part = part.strip()
        if part and part not in seen:
            seen.append(part)
    return seen[:MAX_COLUMNS]


@dataclass
class Column:
    kind: str  # "param" or "metric"
    key: str
    alias: str
    sort: str  # the ?sort= value for this column

    @property
    def label(self):
        return self.key


@dataclass
class RunsTable:
    """What the request asked for, cleaned: columns, sort, filters."""

    experiment: object
    params: list = field(default_factory=list)
    metrics: list = field(default_factory=list)
    sort: str = "-created"
    status: str = ""
    search: str = ""
    filter_text: str = ""

    @classmethod
    def from_request(cls, experiment, query, default_metrics=(), default_params=()):
        params = split_keys(query.get("params")) if "params" in query else list(default_params)
        metrics = split_keys(query.get("metrics")) if "metrics" in query else list(default_metrics)
        status = query.get("status", "")
        if status not in RunStatus.values:
            status = ""
        return cls(
            experiment=experiment,
            params=params,
            metrics=metrics,
            sort=query.get("sort") or "-created",
            status=status,
            search=(query.get("q") or "").strip()[:200],
            filter_text=(query.get("filter") or "").strip(),
        )

    @property
    def columns(self):
        cols = [Column("param", key, f"p{i}", f"params.{key}") for i, key in enumerate(self.params)]
        cols += [Column("metric", key, f"m{i}", f"metrics.{key}") for i, key in enumerate(self.metrics)]
        return cols

    @property
    def sort_field(self):
        return self.sort.lstrip("-")

    @property
    def descending(self):
        return self.sort.startswith("-")

    def order_by(self):
        """The ORDER BY expressions for `sort`; unknown sorts fall back to newest first."""
        name = self.sort_field
        desc = self.descending
        target = None
        if name in ATTRIBUTE_SORTS:
            target = ATTRIBUTE_SORTS[name]
        else:
            for column in self.columns:
                if column.sort == name:
                    target = column.alias
        if target is None:
            return [F("created_at").desc(), F("id").desc()]
        expression = F(target).desc(nulls_last=True) if desc else F(target).asc(nulls_last=True)
        return [expression, F("created_at").desc(), F("id").desc()]

    def _filtered(self):
        runs = Run.objects.for_experiment(self.experiment)
        if self.status:
            runs = runs.filter(status=self.status)
        if self.search:
            runs = runs.filter(name__icontains=self.search)
        return apply_filter(runs, self.filter_text)

    def _annotate(self, runs, columns):
        for column in columns:
            if column.kind == "param":
                runs = runs.with_param(column.key, alias=column.alias)
            else:
                runs = runs.with_metric(column.key, alias=column.alias)
        return runs

    def _sorted(self, runs):
        """`runs` ordered by `sort`, annotated with the one sort column only (not every chosen column)."""
        name = self.sort_field
        if name == "duration":
            runs = runs.annotate(
                duration_sort=ExpressionWrapper(
                    Coalesce("end_time", Now()) - Coalesce("start_time", "created_at"), output_field=DurationField()
                )
            )
        runs = self._annotate(runs, [c for c in self.columns if c.sort == name])
        return runs.order_by(*self.order_by())

    def queryset(self):
        """Runs of the experiment with every column annotation, filtered and ordered; FilterError on a bad filter."""
        return self._annotate(self._sorted(self._filtered()), self.columns).select_related("created_by")

    def page(self, number):
        """The requested page (50 rows); each run gets `.column_values` in column order.

        Two steps keep a 10,000-run page cheap: the page's ids are found with the
        sort column alone, then only those 50 rows get every column's subquery.
        """
        sort_column = next((c for c in self.columns if c.sort == self.sort_field), None)
        if sort_column is not None and sort_column.kind == "metric" and not self.filter_text:
            page, ids = self._page_by_series(sort_column, number)
        else:
            paginator = Paginator(self._sorted(self._filtered()).values_list("pk", flat=True), PAGE_SIZE)
            page = paginator.get_page(number)
            ids = list(page.object_list)
        columns = self.columns
        rows = {run.pk: run for run in self._annotate(Run.objects.filter(pk__in=ids), columns).select_related("created_by")}
        page.object_list = [rows[pk] for pk in ids if pk in rows]
        for run in page.object_list:
            run.column_values = [(column, getattr(run, column.alias)) for column in columns]
        return page

    def _page_by_series(self, column, number):
        """Page ids for a metric sort, read from MetricSeries joined to its runs.

        Order: numbers, then NaN (stored as NULL), then the runs lacking the
        metric (newest first). Today this costs one (run_id, key) index lookup per
        run, like a per-run subquery; the query is shaped so that an index on
        MetricSeries(key, last_value) can let SQLite walk one key's series in
        value order and stop after a page (see bench/README.md, "Pages").
        """
        runs = self._filtered()
        page = Paginator(runs.values_list("pk", flat=True), PAGE_SIZE).get_page(number)  # one COUNT; not evaluated
        bottom = (page.number - 1) * PAGE_SIZE
        value = F("last_value").desc(nulls_last=True) if self.descending else F("last_value").asc(nulls_last=True)
        series = MetricSeries.objects.filter(key=column.key, run__experiment=self.experiment)
        if self.status:
            series = series.filter(run__status=self.status)
        if self.search:
            series = series.filter(run__name__icontains=self.search)
        series = series.order_by(value, F("id").desc())
        ids = list(series.values_list("run_id", flat=True)[bottom : bottom + PAGE_SIZE])
        if len(ids) < PAGE_SIZE:
            with_metric = bottom + len(ids) if ids else series.count()
            lacking = (
                runs.exclude(Exists(MetricSeries.objects.filter(run=OuterRef("pk"), key=column.key)))
                .order_by("-created_at", "-id")
                .values_list("pk", flat=True)
            )
            start = max(0, bottom - with_metric)
            ids += list(lacking[start : start + PAGE_SIZE - len(ids)])
        return page, ids

    def sort_link(self, value):
        """The sort value a header link should set: flips direction when already sorted by it."""
        if self.sort_field == value:
            return value if self.descending else f"-{value}"
        return f"-{value}" if value.startswith("metrics.") or value in ("created", "start", "duration") else value
