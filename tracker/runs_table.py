"""The experiment page's runs table: which columns, which rows, in which order.

Every chosen param and metric column is one correlated subquery annotation
(`RunQuerySet.with_param/with_metric`), so a page costs the same few SQL
queries whether the experiment has ten runs or ten thousand. Sorting by a
metric and filtering on metrics or params read the experiment's copy on
`MetricSeries`/`Param` (index range scans), never one lookup per run.
"""

from dataclasses import dataclass, field
from functools import cached_property

from django.core.cache import cache
from django.core.paginator import Paginator
from django.db.models import Case, DurationField, ExpressionWrapper, F, Max, When
from django.db.models.functions import Coalesce, Now

from tracker.models import MetricSeries, Param, Run, RunStatus
from tracker.run_filter import apply_filter, matching_run_ids, parse

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
    params = Param.objects.filter(experiment=experiment).order_by("key").values_list("key", flat=True).distinct()
    metrics = MetricSeries.objects.filter(experiment=experiment).order_by("key").values_list("key", flat=True).distinct()
    return list(params)[:MAX_CHOOSER_KEYS], list(metrics)[:MAX_CHOOSER_KEYS]


def split_keys(text):
    """'a,b, c' -> ['a', 'b', 'c'] (order kept, blanks and repeats dropped)."""
    seen = []
    for part in (text or "").split(","):
        part = part.strip()
        if part and part not in seen:
            seen.append(part)
    return seen[:MAX_COLUMNS]


class RunsPaginator(Paginator):
    """Pages of 50 whose total is counted from `counted`, a cheaper query of the same runs."""

    def __init__(self, object_list, counted):
        super().__init__(object_list, PAGE_SIZE)
        self.counted = counted

    @cached_property
    def count(self):
        return self.counted.count()


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
        return apply_filter(runs, self.filter_text, experiment=self.experiment)

    def _matching_only(self):
        """The run ids meeting the filter box, when its metric and param conditions are all that narrows the
        runs (no status, name or other condition): one subquery over series and params, no run table."""
        if self.status or self.search:
            return None
        matching, rest = matching_run_ids(self.experiment, parse(self.filter_text))
        return None if rest else matching

    def _counted(self, runs):
        """What to COUNT for the page total: the filtered runs, or the same runs' ids read without the run table."""
        matching = self._matching_only()
        return runs if matching is None else matching

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
        if sort_column is not None and sort_column.kind == "metric":
            page, ids = self._page_by_series(sort_column, number)
        else:
            runs = self._filtered()
            page = RunsPaginator(self._sorted(runs).values_list("pk", flat=True), self._counted(runs)).get_page(number)
            ids = list(page.object_list)
        columns = self.columns
        rows = {run.pk: run for run in self._annotate(Run.objects.filter(pk__in=ids), columns).select_related("created_by")}
        page.object_list = [rows[pk] for pk in ids if pk in rows]
        for run in page.object_list:
            run.column_values = [(column, getattr(run, column.alias)) for column in columns]
        return page

    def _page_by_series(self, column, number):
        """Page ids for a metric sort, read from the experiment's series of that key.

        Order: numbers, then runs whose value is NaN (stored as NULL), then runs
        lacking the metric, both newest first. The numbers are a walk of the index
        (experiment, key, last_value, run) in value order with LIMIT/OFFSET, ties
        broken by run id; with a status, name or filter, each series' run must be
        in the filtered set (one materialised list, never one lookup per run).
        """
        runs = self._filtered()
        page = RunsPaginator(runs, self._counted(runs)).get_page(number)  # one COUNT; the runs are not read
        bottom = (page.number - 1) * PAGE_SIZE
        series = MetricSeries.objects.filter(experiment=self.experiment, key=column.key)
        numbers = series.filter(last_value__isnull=False)
        walk = numbers
        matching = self._matching_only()
        if matching is not None:
            walk = walk.filter(run_id__in=matching)
        elif self.status or self.search or self.filter_text:
            walk = walk.filter(run__in=runs.order_by().values("pk"))
        # No NULLS LAST: NULLs are excluded, and a plain direction lets PostgreSQL walk the index as well.
        value, run = (F("last_value").desc(), F("run_id").desc()) if self.descending else ("last_value", "run_id")
        ids = list(walk.order_by(value, run).values_list("run_id", flat=True)[bottom : bottom + PAGE_SIZE])
        if len(ids) == PAGE_SIZE:
            return page, ids
        counted = bottom + len(ids) if ids or not bottom else walk.count()
        start = bottom + len(ids) - counted  # rows of the rest (NaN, then lacking) before this page
        rest = (
            runs.exclude(pk__in=numbers.values("run_id"))
            .annotate(nan_first=Case(When(pk__in=series.values("run_id"), then=0), default=1))
            .order_by("nan_first", "-created_at", "-id")
            .values_list("pk", flat=True)
        )
        ids += list(rest[start : start + PAGE_SIZE - len(ids)])
        return page, ids

    def sort_link(self, value):
        """The sort value a header link should set: flips direction when already sorted by it."""
        if self.sort_field == value:
            return value if self.descending else f"-{value}"
        return f"-{value}" if value.startswith("metrics.") or value in ("created", "start", "duration") else value
