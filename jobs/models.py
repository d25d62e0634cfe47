"""Compute clusters, environments and training jobs.

A Job is the launch recipe of one Run (source, entry script, argv, nodes,
processes, backend, environment). Each of its `node_count` nodes is a
JobNode that one worker (a ClusterNode) claims with a conditional update;
the database row is the truth for stages, heartbeats and exit codes, and a
late write from a stale attempt changes nothing.
"""

import hashlib
import re
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.utils import timezone

from tracker.models import TERMINAL_STATUSES, Artifact, Run, RunStatus, Workspace


class ClusterKind(models.TextChoices):
    LOCAL = "local", "Local (the supervisor runs its nodes on this machine)"
    EXTERNAL = "external", "External (workers started on other machines)"


class ComputeCluster(models.Model):
    """A named pool of nodes with one RQ queue; jobs and exports run on its workers."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="clusters")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=20, choices=ClusterKind.choices, default=ClusterKind.LOCAL)
    vm_size = models.CharField(max_length=100, blank=True, help_text="Free text, like Azure's vm_size.")
    cpus_per_node = models.PositiveIntegerField(default=1)
    memory_gb_per_node = models.FloatField(default=4)
    gpus_per_node = models.PositiveIntegerField(default=0)
    gpu_type = models.CharField(max_length=100, blank=True)
    min_nodes = models.PositiveIntegerField(default=0)
    max_nodes = models.PositiveIntegerField(default=2)
    idle_seconds_before_scaledown = models.PositiveIntegerField(default=120)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["workspace", "name"], name="unique_cluster_name_per_workspace")]

    def __str__(self):
        return self.name

    @property
    def queue_name(self):
        """The RQ queue this cluster's workers listen on."""
        return f"torchlight.cluster.{self.pk}"

    @property
    def has_gpus(self):
        return self.gpus_per_node > 0

    def queue(self, connection=None):
        from rq import Queue

        from config.redis import get_connection

        return Queue(self.queue_name, connection=connection or get_connection())

    def queue_depth(self):
        """RQ jobs waiting on this cluster's queue, or None when Redis cannot be reached."""
        import redis

        try:
            return self.queue().count
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
            return None

    def waiting_node_count(self):
        """Work on this cluster that no worker has taken yet: unclaimed job nodes of live runs,
        plus queued registry tasks (ONNX exports, "try it"), which need a node just the same."""
        from registry.models import InferenceRequest, OnnxExport, TaskStatus

        job_nodes = JobNode.objects.filter(
            job__cluster=self, status=JobNodeStatus.PENDING, job__run__status__in=[RunStatus.QUEUED, RunStatus.PREPARING, RunStatus.SCALING]
        ).count()
        registry_tasks = sum(
            task.objects.filter(cluster=self, status=TaskStatus.QUEUED).count() for task in (OnnxExport, InferenceRequest)
        )
        return job_nodes + registry_tasks


class Environment(models.Model):
    """A named list of pip requirements; Preparing builds (or reuses) a venv per requirements hash."""

    FORBIDDEN_OPTION = re.compile(r"^\s*(-r|-e|-c|-f|--\S+)", re.IGNORECASE)

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="environments")
    name = models.CharField(max_length=100)
    requirements = models.TextField(blank=True, help_text="pip requirements, one per line.")
    requirements_hash = models.CharField(max_length=64, editable=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["workspace", "name"], name="unique_environment_name_per_workspace")]

    def __str__(self):
        return self.name

    @staticmethod
    def parse_requirements(text):
        """Validated, normalised requirement lines; ValidationError naming each bad line.

        Only named requirements from the configured index: no pip options
        (-r, -e, --index-url, -f ...), no URLs, no file paths, no `@` direct
        references, so a requirement cannot make a worker fetch or read
        something the operator did not allow.
        """
        from packaging.requirements import InvalidRequirement, Requirement

        requirements, errors = [], []
        for number, raw in enumerate((text or "").splitlines(), start=1):
            line = raw.split(" #", 1)[0].strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("-"):
                errors.append(f"line {number}: pip options such as {line.split()[0]!r} are not allowed")
                continue
            if "://" in line or line.startswith((".", "/", "~")) or "\\" in line:
                errors.append(f"line {number}: URLs and file paths are not allowed ({line!r})")
                continue
            try:
                req = Requirement(line)
            except InvalidRequirement as exc:
                errors.append(f"line {number}: {line!r} is not a valid requirement ({exc})")
                continue
            if req.url:
                errors.append(f"line {number}: direct references with '@' are not allowed ({line!r})")
                continue
            requirements.append(str(req))
        if errors:
            raise ValidationError(errors)
        return requirements

    @staticmethod
    def hash_requirements(requirements):
        canonical = "\n".join(sorted(set(requirements)))
        return hashlib.sha256(canonical.encode()).hexdigest()

    @property
    def requirement_list(self):
        return self.parse_requirements(self.requirements)

    def clean(self):
        try:
            self.parse_requirements(self.requirements)
        except ValidationError as exc:
            raise ValidationError({"requirements": exc.messages}) from None

    def save(self, *args, **kwargs):
        self.requirements_hash = self.hash_requirements(self.parse_requirements(self.requirements))
        update_fields = kwargs.get("update_fields")
        if update_fields is not None and "requirements" in update_fields:
            kwargs["update_fields"] = {*update_fields, "requirements_hash"}
        super().save(*args, **kwargs)


class SourceKind(models.TextChoices):
    EXAMPLE = "example", "Built-in example"
    UPLOAD = "upload", "Uploaded source"


class Backend(models.TextChoices):
    GLOO = "gloo", "gloo (CPU)"
    NCCL = "nccl", "nccl (GPU)"
    MPI = "mpi", "mpi"


class JobQuerySet(models.QuerySet):
    def for_workspace(self, workspace):
        return self.filter(run__experiment__workspace=workspace)

    def live(self):
        return self.exclude(run__status__in=TERMINAL_STATUSES)


class Job(models.Model):
    """How a Run was launched on a cluster: everything Azure's PyTorch estimator took."""

    run = models.OneToOneField(Run, on_delete=models.CASCADE, related_name="job")
    cluster = models.ForeignKey(ComputeCluster, null=True, on_delete=models.SET_NULL, related_name="jobs")
    environment = models.ForeignKey(Environment, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs")
    source_kind = models.CharField(max_length=20, choices=SourceKind.choices)
    example_name = models.CharField(max_length=100, blank=True)
    source_blob_key = models.CharField(max_length=200, blank=True, help_text="Storage key of the uploaded .py/.zip/.tar.gz.")
    source_filename = models.CharField(max_length=255, blank=True)
    entry_script = models.CharField(max_length=500)
    script_args = models.JSONField(default=list, blank=True, help_text="argv after the entry script, never through a shell.")
    env_vars = models.JSONField(default=dict, blank=True)
    node_count = models.PositiveIntegerField(default=1)
    procs_per_node = models.PositiveIntegerField(default=1)
    backend = models.CharField(max_length=10, choices=Backend.choices, default=Backend.GLOO)
    use_gpu = models.BooleanField(default=False)
    max_duration_seconds = models.PositiveIntegerField(null=True, blank=True)
    resume_from = models.ForeignKey(Artifact, null=True, blank=True, on_delete=models.SET_NULL, related_name="resumed_by")
    submitted_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    idempotency_key = models.CharField(max_length=200, null=True, blank=True, unique=True)
    rendezvous_address = models.CharField(max_length=300, blank=True, help_text="host:port published by node 0.")
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    canceled_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    objects = JobQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"job {self.pk} ({self.run_id})"

    @property
    def is_distributed(self):
        return self.node_count * self.procs_per_node > 1

    @property
    def world_size(self):
        return self.node_count * self.procs_per_node

    @property
    def cancel_requested(self):
        return self.cancel_requested_at is not None

    def request_cancel(self, user=None):
        """Mark the job for cancellation; nodes see it on their next check. Returns True the first time."""
        return bool(
            Job.objects.filter(pk=self.pk, cancel_requested_at__isnull=True).update(
                cancel_requested_at=timezone.now(), canceled_by=user
            )
        )

    def advance_run(self, status):
        """Move the run forward to a non-terminal stage, never backwards and never out of a terminal state."""
        order = [RunStatus.QUEUED, RunStatus.PREPARING, RunStatus.SCALING, RunStatus.RUNNING, RunStatus.POST_PROCESSING]
        earlier = order[: order.index(status)]
        now = timezone.now()
        changes = {"status": status, "status_reason": ""}
        from tracker.models import STAGE_TIMESTAMP_FIELDS

        changes[STAGE_TIMESTAMP_FIELDS[status]] = now
        if status == RunStatus.RUNNING:
            changes["start_time"] = now
        return bool(Run.objects.filter(pk=self.run_id, status__in=earlier).update(**changes))

    def clone_initial(self):
        """Form initial data for "Clone and edit"."""
        return {
            "experiment": self.run.experiment_id,
            "cluster": self.cluster_id,
            "environment": self.environment_id,
            "source_kind": self.source_kind,
            "example_name": self.example_name,
            "entry_script": self.entry_script,
            "script_args": list(self.script_args),
            "env_vars": dict(self.env_vars),
            "node_count": self.node_count,
            "procs_per_node": self.procs_per_node,
            "backend": self.backend,
            "use_gpu": self.use_gpu,
            "max_duration_seconds": self.max_duration_seconds,
            "resume_from": self.resume_from_id,
        }


class JobNodeStatus(models.TextChoices):
    PENDING = "pending", "Waiting for a node"
    PREPARING = "preparing", "Preparing"
    WAITING = "waiting", "Waiting for the other nodes"
    RUNNING = "running", "Running"
    POST_PROCESSING = "post_processing", "Uploading outputs"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    CANCELED = "canceled", "Canceled"
    LOST = "lost", "Node lost"


JOB_NODE_ACTIVE = (JobNodeStatus.PREPARING, JobNodeStatus.WAITING, JobNodeStatus.RUNNING, JobNodeStatus.POST_PROCESSING)
JOB_NODE_DONE = (JobNodeStatus.COMPLETED, JobNodeStatus.FAILED, JobNodeStatus.CANCELED, JobNodeStatus.LOST)


class NodeStatus(models.TextChoices):
    IDLE = "idle", "Idle"
    BUSY = "busy", "Busy"
    UNREACHABLE = "unreachable", "Unreachable"
    STOPPED = "stopped", "Stopped"


class ClusterNodeQuerySet(models.QuerySet):
    def alive(self):
        return self.filter(status__in=[NodeStatus.IDLE, NodeStatus.BUSY])


class ClusterNode(models.Model):
    """A worker process serving a cluster's queue; it heart-beats into this row."""

    cluster = models.ForeignKey(ComputeCluster, on_delete=models.CASCADE, related_name="nodes")
    name = models.CharField(max_length=200, unique=True, help_text="The RQ worker name.")
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    gpus = models.CharField(max_length=100, blank=True, help_text="GPU indices this node hands to jobs, e.g. 0,1.")
    status = models.CharField(max_length=20, choices=NodeStatus.choices, default=NodeStatus.IDLE, db_index=True)
    managed = models.BooleanField(default=False, help_text="Started by the supervisor (local clusters).")
    last_heartbeat = models.DateTimeField(default=timezone.now)
    current_job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    idle_since = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    stopped_at = models.DateTimeField(null=True, blank=True)

    objects = ClusterNodeQuerySet.as_manager()

    class Meta:
        ordering = ["cluster", "started_at"]

    def __str__(self):
        return self.name

    @property
    def gpu_list(self):
        return [g for g in self.gpus.split(",") if g.strip()]

    def beat(self):
        now = timezone.now()
        # Job nodes beat from the work horse itself: a hung or dead horse must look dead.
        ClusterNode.objects.filter(pk=self.pk).exclude(status=NodeStatus.STOPPED).update(last_heartbeat=now)
        # Back after a network split or a long pause: reachable again.
        ClusterNode.objects.filter(pk=self.pk, status=NodeStatus.UNREACHABLE, current_job__isnull=True).update(status=NodeStatus.IDLE)
        ClusterNode.objects.filter(pk=self.pk, status=NodeStatus.UNREACHABLE, current_job__isnull=False).update(status=NodeStatus.BUSY)
        self.last_heartbeat = now

    def mark_busy(self, job):
        now = timezone.now()
        ClusterNode.objects.filter(pk=self.pk).update(status=NodeStatus.BUSY, current_job=job, idle_since=None, last_heartbeat=now)

    def mark_idle(self):
        now = timezone.now()
        ClusterNode.objects.filter(pk=self.pk).exclude(status=NodeStatus.STOPPED).update(
            status=NodeStatus.IDLE, current_job=None, idle_since=now, last_heartbeat=now
        )

    def mark_stopped(self):
        ClusterNode.objects.filter(pk=self.pk).update(status=NodeStatus.STOPPED, current_job=None, stopped_at=timezone.now())

    def is_stale(self, seconds):
        return self.last_heartbeat < timezone.now() - timedelta(seconds=seconds)


class JobNode(models.Model):
    """One node slot of a job: claimed by one worker attempt, with its own status and exit code."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="nodes")
    node_rank = models.PositiveIntegerField()
    attempt = models.PositiveIntegerField(default=1)
    status = models.CharField(max_length=20, choices=JobNodeStatus.choices, default=JobNodeStatus.PENDING, db_index=True)
    worker = models.ForeignKey(ClusterNode, null=True, blank=True, on_delete=models.SET_NULL, related_name="job_nodes")
    hostname = models.CharField(max_length=255, blank=True)
    rq_job_id = models.CharField(max_length=200, blank=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    process_group = models.IntegerField(null=True, blank=True, help_text="Process group of the running script, for kills from the worker.")
    reason = models.TextField(blank=True)

    class Meta:
        ordering = ["job", "node_rank"]
        constraints = [models.UniqueConstraint(fields=["job", "node_rank"], name="unique_node_rank_per_job")]

    def __str__(self):
        return f"{self.job} node {self.node_rank}"

    def rq_id_for(self, attempt=None):
        return f"torchlight-job-{self.job_id}-node-{self.node_rank}-try-{attempt or self.attempt}"

    def claim(self, attempt, worker):
        """Conditional claim: True only for the one attempt that finds the slot pending."""
        now = timezone.now()
        claimed = JobNode.objects.filter(pk=self.pk, attempt=attempt, status=JobNodeStatus.PENDING).update(
            status=JobNodeStatus.PREPARING, worker=worker, hostname=worker.hostname if worker else "",
            claimed_at=now, heartbeat_at=now,
        )
        if claimed:
            self.refresh_from_db()
        return bool(claimed)

    def set_status(self, status, **fields):
        """Write as this attempt only: a stale attempt (or a finished node) changes nothing."""
        changes = {"status": status, "heartbeat_at": timezone.now(), **fields}
        if status in JOB_NODE_DONE:
            changes["finished_at"] = timezone.now()
        updated = (
            JobNode.objects.filter(pk=self.pk, attempt=self.attempt)
            .exclude(status__in=JOB_NODE_DONE)
            .update(**changes)
        )
        if updated:
            for key, value in changes.items():
                setattr(self, key, value)
        return bool(updated)

    def still_mine(self):
        return JobNode.objects.filter(pk=self.pk, attempt=self.attempt).exclude(status__in=JOB_NODE_DONE).exists()


class LogStream(models.TextChoices):
    STDOUT = "stdout", "stdout"
    STDERR = "stderr", "stderr"
    LOG = "log", "log file"
    SYSTEM = "system", "Torchlight"


class RunLogLine(models.Model):
    """One line of a run's log (per node and rank). The id is the polling offset."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="log_lines", db_index=False)
    node_rank = models.PositiveIntegerField(default=0)
    rank = models.IntegerField(null=True, blank=True, help_text="Global process rank, when known.")
    stream = models.CharField(max_length=10, choices=LogStream.choices, default=LogStream.STDOUT)
    source = models.CharField(max_length=255, blank=True, help_text="File under ./logs for stream 'log'.")
    text = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["run", "id"], name="runlogline_run_id")]

    def __str__(self):
        return self.text[:80]

    def as_dict(self):
        return {
            "offset": self.pk,
            "node_rank": self.node_rank,
            "rank": self.rank,
            "stream": self.stream,
            "source": self.source,
            "text": self.text,
            "time": self.created_at.isoformat(),
        }


MAX_LOG_LINE = 16 * 1024


def write_log(run_id, lines):
    """Store log lines: an iterable of dicts with node_rank, rank, stream, text (and source)."""
    rows = [
        RunLogLine(
            run_id=run_id,
            node_rank=line.get("node_rank", 0),
            rank=line.get("rank"),
            stream=line.get("stream", LogStream.STDOUT),
            source=line.get("source", "")[:255],
            text=line["text"][:MAX_LOG_LINE],
            created_at=line.get("created_at") or timezone.now(),
        )
        for line in lines
    ]
    if rows:
        with transaction.atomic():
            RunLogLine.objects.bulk_create(rows, batch_size=500)
    return len(rows)


def read_log(run, after_offset=0, limit=1000, node_rank=None, rank=None):
    """(lines, next_offset): up to `limit` lines after `after_offset`, oldest first.

    Poll with the returned next_offset; it stays at after_offset when nothing is new.
    """
    limit = max(1, min(int(limit), 10000))
    qs = RunLogLine.objects.filter(run=run, id__gt=int(after_offset or 0))
    if node_rank is not None:
        qs = qs.filter(node_rank=node_rank)
    if rank is not None:
        qs = qs.filter(rank=rank)
    lines = list(qs.order_by("id")[:limit])
    next_offset = lines[-1].pk if lines else int(after_offset or 0)
    return lines, next_offset
