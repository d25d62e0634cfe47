"""Experiment tracking: workspaces, experiments, runs and what runs log.

Everything a user sees belongs to a Workspace; membership with a role
(reader < contributor < owner) decides what they may see and change.
"""

import hashlib
import math
import secrets
import uuid

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone


class Role(models.TextChoices):
    READER = "reader", "Reader"
    CONTRIBUTOR = "contributor", "Contributor"
    OWNER = "owner", "Owner"


ROLE_RANK = {Role.READER: 1, Role.CONTRIBUTOR: 2, Role.OWNER: 3}


class WorkspaceQuerySet(models.QuerySet):
    def for_user(self, user):
        if not user.is_authenticated:
            return self.none()
        return self.filter(memberships__user=user)


class Workspace(models.Model):
    """A team's space: experiments, runs, clusters and models belong to one."""

    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, through="Membership", related_name="workspaces")

    objects = WorkspaceQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    def role_of(self, user):
        """The user's role here, or None for a non-member."""
        if not user.is_authenticated:
            return None
        membership = self.memberships.filter(user=user).only("role").first()
        return membership.role if membership else None

    def add_member(self, user, role=Role.READER):
        membership, _ = Membership.objects.update_or_create(workspace=self, user=user, defaults={"role": role})
        return membership


class Membership(models.Model):
    """A user's role in a workspace."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.READER)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "user"], name="unique_membership")]

    def __str__(self):
        return f"{self.user} in {self.workspace} ({self.role})"

    def allows(self, min_role):
        return ROLE_RANK[self.role] >= ROLE_RANK[min_role]


class ExperimentQuerySet(models.QuerySet):
    def for_user(self, user):
        return self.filter(workspace__in=Workspace.objects.for_user(user))

    def active(self):
        return self.filter(archived=False)


class Experiment(models.Model):
    """A named group of runs inside a workspace (name unique per workspace)."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="experiments")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    tags = models.JSONField(default=dict, blank=True)
    archived = models.BooleanField(default=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ExperimentQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["workspace", "name"], name="unique_experiment_name_per_workspace")]

    def __str__(self):
        return self.name

    def archive(self):
        self.archived = True
        self.save(update_fields=["archived", "updated_at"])

    def unarchive(self):
        self.archived = False
        self.save(update_fields=["archived", "updated_at"])


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    PREPARING = "preparing", "Preparing"
    SCALING = "scaling", "Scaling"
    RUNNING = "running", "Running"
    POST_PROCESSING = "post_processing", "Post-processing"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    CANCELED = "canceled", "Canceled"


TERMINAL_STATUSES = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELED)
LIVE_STATUSES = tuple(s for s in RunStatus.values if s not in TERMINAL_STATUSES)

# Which timestamp field records entry into each stage.
STAGE_TIMESTAMP_FIELDS = {
    RunStatus.QUEUED: "queued_at",
    RunStatus.PREPARING: "preparing_at",
    RunStatus.SCALING: "scaling_at",
    RunStatus.RUNNING: "running_at",
    RunStatus.POST_PROCESSING: "post_processing_at",
    RunStatus.COMPLETED: "end_time",
    RunStatus.FAILED: "end_time",
    RunStatus.CANCELED: "end_time",
}


class RunQuerySet(models.QuerySet):
    def for_user(self, user):
        return self.filter(experiment__workspace__in=Workspace.objects.for_user(user))

    def for_workspace(self, workspace):
        return self.filter(experiment__workspace=workspace)

    def for_experiment(self, experiment):
        return self.filter(experiment=experiment)

    def live(self):
        return self.filter(status__in=LIVE_STATUSES)

    def with_metric(self, key, alias=None):
        """Annotate each run with the last value of metric `key` (for sorting and columns)."""
        alias = alias or f"metric_{key}"
        last = MetricSeries.objects.filter(run=models.OuterRef("pk"), key=key).values("last_value")[:1]
        return self.annotate(**{alias: models.Subquery(last)})

    def with_param(self, key, alias=None):
        alias = alias or f"param_{key}"
        value = Param.objects.filter(run=models.OuterRef("pk"), key=key).values("value")[:1]
        return self.annotate(**{alias: models.Subquery(value)})


class Run(models.Model):
    """One execution of training code: a job launched from a form, or a script logging by itself."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="runs")
    name = models.CharField(max_length=250, blank=True)
    status = models.CharField(max_length=20, choices=RunStatus.choices, default=RunStatus.RUNNING, db_index=True)
    status_reason = models.TextField(blank=True, help_text="Why the run failed or was canceled.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    start_time = models.DateTimeField(null=True, blank=True)
    end_time = models.DateTimeField(null=True, blank=True)
    # Stage timestamps: when the run entered each job stage (None if it never did).
    queued_at = models.DateTimeField(null=True, blank=True)
    preparing_at = models.DateTimeField(null=True, blank=True)
    scaling_at = models.DateTimeField(null=True, blank=True)
    running_at = models.DateTimeField(null=True, blank=True)
    post_processing_at = models.DateTimeField(null=True, blank=True)
    parent_run = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="child_runs")
    source_note = models.TextField(blank=True, help_text="Source or commit the run was made from.")
    progress_current = models.FloatField(null=True, blank=True)
    progress_total = models.FloatField(null=True, blank=True)
    progress_updated_at = models.DateTimeField(null=True, blank=True)

    objects = RunQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["experiment", "-created_at"], name="run_experiment_created")]

    def __str__(self):
        return self.name or str(self.id)[:8]

    @property
    def workspace(self):
        return self.experiment.workspace

    @property
    def display_name(self):
        return self.name or str(self.id)[:8]

    @property
    def is_terminal(self):
        return self.status in TERMINAL_STATUSES

    @property
    def is_live(self):
        return not self.is_terminal

    @property
    def duration(self):
        """Wall time from start (or creation) to end (or now), as a timedelta."""
        begin = self.start_time or self.created_at
        if begin is None:
            return None
        return (self.end_time or timezone.now()) - begin

    def stage_timeline(self):
        """[(stage label, entered at)] for the stages this run went through, in order."""
        stages = [
            ("Queued", self.queued_at),
            ("Preparing", self.preparing_at),
            ("Scaling", self.scaling_at),
            ("Running", self.running_at),
            ("Post-processing", self.post_processing_at),
        ]
        timeline = [(label, at) for label, at in stages if at]
        if self.is_terminal and self.end_time:
            timeline.append((self.get_status_display(), self.end_time))
        return timeline

    def move_to(self, status, reason=""):
        """Enter `status`, stamping its timestamp; terminal states are final.

        A conditional update, so a late writer (a stale attempt, a second
        worker) cannot move a finished run. Returns True if this call moved it.
        """
        now = timezone.now()
        changes = {"status": status, STAGE_TIMESTAMP_FIELDS[status]: now}
        if reason:
            changes["status_reason"] = reason
        if status == RunStatus.RUNNING and not self.start_time:
            changes["start_time"] = now
        moved = Run.objects.filter(pk=self.pk).exclude(status__in=TERMINAL_STATUSES).update(**changes)
        if moved:
            for field, value in changes.items():
                setattr(self, field, value)
        return bool(moved)

    def move_to_experiment(self, experiment):
        """Move the run (with its metric series and params, which copy its experiment) to `experiment`."""
        with transaction.atomic():
            self.experiment = experiment
            self.save(update_fields=["experiment"])

    def save(self, *args, **kwargs):
        update_fields = kwargs.get("update_fields")
        if self._state.adding or (update_fields is not None and "experiment" not in update_fields):
            super().save(*args, **kwargs)
            return
        # The admin may change a run's experiment: its series and params follow in the same transaction.
        with transaction.atomic():
            super().save(*args, **kwargs)
            for model in (MetricSeries, Param):
                model.objects.filter(run=self).exclude(experiment_id=self.experiment_id).update(
                    experiment_id=self.experiment_id
                )

    def finish(self, status=RunStatus.COMPLETED, reason=""):
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"{status!r} is not a terminal status")
        return self.move_to(status, reason)

    def set_progress(self, current, total):
        self.progress_current = current
        self.progress_total = total
        self.progress_updated_at = timezone.now()
        self.save(update_fields=["progress_current", "progress_total", "progress_updated_at"])

    @property
    def progress_fraction(self):
        if not self.progress_total or self.progress_current is None:
            return None
        return max(0.0, min(1.0, self.progress_current / self.progress_total))

    @property
    def progress_eta(self):
        """Remaining time estimated from progress so far, or None."""
        fraction = self.progress_fraction
        begin = self.running_at or self.start_time
        if not fraction or not begin or fraction >= 1 or not self.progress_updated_at:
            return None
        elapsed = self.progress_updated_at - begin
        return elapsed * ((1 - fraction) / fraction)


class RunChildQuerySet(models.QuerySet):
    """Rows that keep a copy of their run's experiment (`MetricSeries`, `Param`).

    The copy lets the experiment page sort and filter 10,000 runs with one index
    range scan per metric or param instead of one lookup per run; `bulk_create`
    fills it here so every caller (ingest, services, tests) gets it right.
    """

    def bulk_create(self, objs, *args, **kwargs):
        objs = list(objs)
        copy_run_experiment(objs)
        return super().bulk_create(objs, *args, **kwargs)


def copy_run_experiment(objs):
    """Set `experiment_id` from each object's run where unset: free for a loaded run, one query for the rest."""
    unset = [obj for obj in objs if obj.experiment_id is None]
    if not unset:
        return
    run_field = unset[0]._meta.get_field("run")
    unloaded = {obj.run_id for obj in unset if not run_field.is_cached(obj)}
    experiments = dict(Run.objects.filter(pk__in=unloaded).values_list("pk", "experiment_id")) if unloaded else {}
    for obj in unset:
        obj.experiment_id = obj.run.experiment_id if run_field.is_cached(obj) else experiments.get(obj.run_id)


class Param(models.Model):
    """A run parameter: a string value, immutable once set.

    `experiment` copies the run's (kept in step by `Run.move_to_experiment`) so the
    runs table filters on params with an index range scan.
    """

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="params")
    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="+", db_index=False,
                                   editable=False)
    key = models.CharField(max_length=250)
    value = models.TextField()

    objects = RunChildQuerySet.as_manager()

    class Meta:
        ordering = ["key"]
        constraints = [models.UniqueConstraint(fields=["run", "key"], name="unique_param_key_per_run")]
        # No `value` in the index: values reach 8 KB, past PostgreSQL's B-tree entry limit.
        indexes = [models.Index(fields=["experiment", "key", "run"], name="param_experiment_key_run")]

    def __str__(self):
        return f"{self.key}={self.value}"

    def save(self, *args, **kwargs):
        copy_run_experiment([self])
        super().save(*args, **kwargs)


class RunTag(models.Model):
    """A mutable key/value label on a run."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="tags")
    key = models.CharField(max_length=250)
    value = models.TextField(blank=True)

    class Meta:
        ordering = ["key"]
        constraints = [models.UniqueConstraint(fields=["run", "key"], name="unique_tag_key_per_run")]

    def __str__(self):
        return f"{self.key}={self.value}"


class MetricSeries(models.Model):
    """One metric key of one run, with its summary (last, min, max, count) kept up to date on ingest.

    Tables and sorting read this row instead of the raw points. NaN is not
    a min or max; `nonfinite_count` says how many NaN/±Inf values arrived.
    `experiment` copies the run's (see `RunChildQuerySet`).
    """

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="metric_series")
    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="+", db_index=False,
                                   editable=False)
    key = models.CharField(max_length=250)
    count = models.BigIntegerField(default=0)
    nonfinite_count = models.BigIntegerField(default=0)
    last_step = models.BigIntegerField(null=True)
    last_value = models.FloatField(null=True)  # NULL means NaN (SQLite cannot store NaN)
    last_timestamp = models.FloatField(null=True)
    last_epoch = models.FloatField(null=True)
    min_value = models.FloatField(null=True)
    max_value = models.FloatField(null=True)
    first_timestamp = models.FloatField(null=True)
    max_step = models.BigIntegerField(null=True)

    objects = RunChildQuerySet.as_manager()

    class Meta:
        ordering = ["key"]
        constraints = [models.UniqueConstraint(fields=["run", "key"], name="unique_metric_key_per_run")]
        # A metric sort walks this index in value order (LIMIT/OFFSET, never a lookup per run);
        # a metric condition reads one range of it.
        indexes = [
            models.Index(fields=["experiment", "key", "last_value", "run"], name="series_experiment_key_value"),
        ]

    def __str__(self):
        return f"{self.key} ({self.count} points)"

    def save(self, *args, **kwargs):
        copy_run_experiment([self])
        super().save(*args, **kwargs)

    @property
    def last(self):
        return math.nan if self.last_value is None and self.count else self.last_value


class MetricPoint(models.Model):
    """A raw metric point. `value` NULL encodes NaN; ±Inf are stored as such.

    Written in bulk by tracker.metric_store, never one row at a time.
    """

    series = models.ForeignKey(MetricSeries, on_delete=models.CASCADE, related_name="points", db_index=False)
    step = models.BigIntegerField()
    value = models.FloatField(null=True)
    timestamp = models.FloatField()
    epoch = models.FloatField(null=True)

    class Meta:
        indexes = [models.Index(fields=["series", "step"], name="metricpoint_series_step")]


class Artifact(models.Model):
    """A file a run produced: a logical path in the run, stored under a server-generated key."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="artifacts")
    path = models.CharField(max_length=1024)
    size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)
    storage_key = models.CharField(max_length=200, unique=True, editable=False)
    content_type = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["path"]
        constraints = [models.UniqueConstraint(fields=["run", "path"], name="unique_artifact_path_per_run")]

    def __str__(self):
        return self.path

    @property
    def name(self):
        return self.path.rsplit("/", 1)[-1]


def hash_token(raw):
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiTokenQuerySet(models.QuerySet):
    def active(self):
        return self.filter(revoked_at__isnull=True)

    def authenticate(self, raw):
        """The live token matching `raw`, or None. Run tokens die with their run."""
        if not raw or len(raw) > 200:
            return None
        token = self.active().select_related("user", "run").filter(token_hash=hash_token(raw)).first()
        if token is None:
            return None
        if token.expires_at and token.expires_at <= timezone.now():
            return None
        return token


class ApiToken(models.Model):
    """A bearer token for the REST API, stored hashed and shown once.

    A personal token acts as its user; a run token (run set) may write only
    to that run, and only while the run is live.
    """

    PREFIX = "tl_"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    hint = models.CharField(max_length=12, editable=False, help_text="First characters, to recognise the token.")
    run = models.ForeignKey(Run, null=True, blank=True, on_delete=models.CASCADE, related_name="tokens")
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.name} ({self.hint}…)"

    @classmethod
    def mint(cls, user, name, run=None, expires_at=None):
        """Create a token; returns (token, raw secret). The raw secret is never stored."""
        raw = cls.PREFIX + secrets.token_urlsafe(32)
        token = cls.objects.create(
            user=user, name=name, run=run, expires_at=expires_at, token_hash=hash_token(raw), hint=raw[:10]
        )
        return token, raw

    @property
    def is_run_token(self):
        return self.run_id is not None

    def revoke(self):
        self.revoked_at = timezone.now()
        self.save(update_fields=["revoked_at"])

    def touch(self):
        # One write per minute at most: last_used_at is a hint, not an audit log.
        now = timezone.now()
        if not self.last_used_at or (now - self.last_used_at).total_seconds() > 60:
            ApiToken.objects.filter(pk=self.pk).update(last_used_at=now)


# Levels of the multi-resolution summary: a bucket at level k covers steps
# [b * 2**k, (b + 1) * 2**k). Spaced by 2 bits so a chart read never touches
# more than ~4 rows per bucket it returns.
BUCKET_LEVELS = (4, 6, 8, 10, 12, 14, 16)


class MetricBucket(models.Model):
    """One bucket of 2**level steps of a series: count, min and max points, first non-finite point.

    Maintained by tracker.metric_store on every ingest (merged per touched
    bucket, never recomputed from the raw points), so chart reads of a long
    series read buckets instead of raw points. min_*/max_* cover finite values
    only (min_step NULL: the bucket holds no finite value); nf_* is the first
    NaN/±Inf point of the bucket (nf_step NULL: none; nf_value NULL = NaN).
    """

    series = models.ForeignKey(MetricSeries, on_delete=models.CASCADE, related_name="buckets", db_index=False)
    level = models.PositiveSmallIntegerField()
    bucket = models.BigIntegerField()
    count = models.BigIntegerField(default=0)
    nonfinite_count = models.BigIntegerField(default=0)
    min_step = models.BigIntegerField(null=True)
    min_value = models.FloatField(null=True)
    min_timestamp = models.FloatField(null=True)
    min_epoch = models.FloatField(null=True)
    max_step = models.BigIntegerField(null=True)
    max_value = models.FloatField(null=True)
    max_timestamp = models.FloatField(null=True)
    max_epoch = models.FloatField(null=True)
    nf_step = models.BigIntegerField(null=True)
    nf_value = models.FloatField(null=True)
    nf_timestamp = models.FloatField(null=True)
    nf_epoch = models.FloatField(null=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["series", "level", "bucket"], name="unique_metric_bucket"),
        ]

    def __str__(self):
        return f"{self.series_id} L{self.level} #{self.bucket} ({self.count})"


class IngestBatch(models.Model):
    """An idempotency key of a metrics batch: a repeated key returns this result and stores nothing."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="ingest_batches")
    key = models.CharField(max_length=200)
    stored = models.IntegerField(default=0)
    errors = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "key"], name="unique_ingest_batch_key")]

    def __str__(self):
        return f"{self.run_id}:{self.key}"
