"""The experiment page's runs table: which columns, which rows, in which order.

Every chosen param and metric column is one correlated subquery annotation
(`RunQuerySet.with_param/with_metric`), so a page costs the same few SQL
queries whether the experiment has ten runs or ten thousand.
"""

from dataclasses import dataclass, field

from django.core.paginator import Paginator
from django.db.models import DurationField, ExpressionWrapper, F
from django.db.models.functions import Coalesce, Now

from tracker.models import MetricSeries, Param, Run, RunStatus
from tracker.run_filter import apply_filter

PAGE_SIZE = 50
MAX_COLUMNS = 30  # per kind; a URL asking for more is cut, not refused

ATTRIBUTE_SORTS = {
    "name": "name",
    "status": "status",
    "user": "created_by__username",
    "created": "created_at",
    "start": "start_time",
    "duration": "duration_sort",
}


def experiment_keys(experiment):
    """(param keys, metric keys) present in the experiment: one DISTINCT query each."""
    params = Param.objects.filter(run__experiment=experiment).order_by("key").values_list("key", flat=True).distinct()
    metrics = (
        MetricSeries.objects.filter(run__experiment=experiment).order_by("key").values_list("key", flat=True).distinct()
    )
    return list(params), list(metrics)


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

    def queryset(self):
        """Runs of the experiment with the column annotations, filtered and ordered; FilterError on a bad filter."""
        runs = Run.objects.for_experiment(self.experiment).select_related("created_by")
        if self.status:
            runs = runs.filter(status=self.status)
        if self.search:
            runs = runs.filter(name__icontains=self.search)
        runs = apply_filter(runs, self.filter_text)
        for column in self.columns:
            if column.kind == "param":
                runs = runs.with_param(column.key, alias=column.alias)
            else:
                runs = runs.with_metric(column.key, alias=column.alias)
        if self.sort_field == "duration":
            runs = runs.annotate(
                duration_sort=ExpressionWrapper(
                    Coalesce("end_time", Now()) - Coalesce("start_time", "created_at"), output_field=DurationField()
                )
            )
        return runs.order_by(*self.order_by())

    def page(self, number):
        """The requested page (50 rows); each run gets `.column_values` in column order."""
        paginator = Paginator(self.queryset(), PAGE_SIZE)
        page = paginator.get_page(number)
        columns = self.columns
        for run in page.object_list:
            run.column_values = [(column, getattr(run, column.alias)) for column in columns]
        return page

    def sort_link(self, value):
        """The sort value a header link should set: flips direction when already sorted by it."""
        if self.sort_field == value:
            return value if self.descending else f"-{value}"
        return f"-{value}" if value.startswith("metrics.") or value in ("created", "start", "duration") else value
