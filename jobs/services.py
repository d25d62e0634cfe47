"""Actions on jobs that span models or reach outside the database (queue, files).

`submit_job` creates the Run (Queued) and the Job in one transaction and
enqueues one RQ job per node after commit; when Redis is down the run stays
Queued ("waiting for the queue") and the reconciler enqueues it later. It
never runs a job inline.
"""

import logging
import re
import shutil

import redis
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from jobs import conf
from jobs.models import Backend, Job, JobNode, JobNodeStatus, SourceKind
from tracker.models import Run, RunStatus

logger = logging.getLogger("torchlight.jobs")

WAITING_FOR_QUEUE = "waiting for the queue"
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
FORBIDDEN_ENV = {"LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP",
                 "PYTHONUSERBASE", "PYTHONINSPECT", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "PATH"}
MAX_ARGS = 200
MAX_ARG_CHARS = 8192
MAX_ENV_VALUE = 32 * 1024


def mpirun_available():
    return shutil.which("mpirun") is not None


def validate_env_vars(env_vars):
    """Error messages for bad environment variable names or values (empty list when fine)."""
    errors = []
    for name, value in (env_vars or {}).items():
        if not isinstance(name, str) or not ENV_NAME.match(name):
            errors.append(f"{name!r} is not a valid environment variable name (letters, digits and _, not starting with a digit)")
        elif name.upper() in FORBIDDEN_ENV or name.upper().startswith("TORCHLIGHT_"):
            errors.append(f"{name} may not be set: it would change how the job is launched or what it can reach")
        elif not isinstance(value, str):
            errors.append(f"{name}: the value must be a string")
        elif "\x00" in value or len(value) > MAX_ENV_VALUE:
            errors.append(f"{name}: the value contains a NUL byte or is longer than {MAX_ENV_VALUE} characters")
    return errors


def validate_launch(*, cluster, node_count=1, procs_per_node=1, backend=Backend.GLOO, use_gpu=False,
                    env_vars=None, script_args=(), max_duration_seconds=None, entry_script="x.py", resume_from=None,
                    workspace=None):
    """Cross-field rules of the launch form; raises ValidationError({field: [messages]})."""
    errors = {}

    def add(field, message):
        errors.setdefault(field, []).append(message)

    if cluster is None:
        add("cluster", "Choose a compute cluster.")
    if workspace is not None and cluster is not None and cluster.workspace_id != workspace.pk:
        add("cluster", "That cluster belongs to another workspace.")
    if not isinstance(node_count, int) or node_count < 1:
        add("node_count", "Node count must be at least 1.")
    elif cluster is not None and node_count > cluster.max_nodes:
        add("node_count", f"Node count {node_count} is above the cluster's maximum of {cluster.max_nodes} nodes.")
    if not isinstance(procs_per_node, int) or procs_per_node < 1:
        add("procs_per_node", "Processes per node must be at least 1.")
    elif procs_per_node > 64:
        add("procs_per_node", "Processes per node must be at most 64.")
    elif use_gpu and cluster is not None and cluster.gpus_per_node and procs_per_node > cluster.gpus_per_node:
        add("procs_per_node", f"{procs_per_node} processes per node but the cluster's nodes have {cluster.gpus_per_node} GPUs.")
    if backend not in Backend.values:
        add("backend", f"Unknown backend {backend!r}: choose gloo, nccl or mpi.")
    elif backend == Backend.NCCL and not use_gpu:
        add("backend", "nccl needs GPUs: tick 'use GPU' or choose gloo.")
    elif backend == Backend.MPI and not mpirun_available():
        add("backend", "mpi needs mpirun on the nodes, and there is none here: choose gloo (CPU) or nccl (GPU).")
    if use_gpu and cluster is not None and not cluster.gpus_per_node:
        add("use_gpu", f"Cluster {cluster.name} has no GPUs (0 GPUs per node).")
    if backend == Backend.NCCL and use_gpu and cluster is not None and not cluster.gpus_per_node:
        add("backend", "nccl needs a cluster with GPUs.")
    for message in validate_env_vars(env_vars):
        add("env_vars", message)
    if not isinstance(script_args, (list, tuple)) or not all(isinstance(a, str) for a in script_args):
        add("script_args", "Script arguments must be a list of strings.")
    elif len(script_args) > MAX_ARGS or any(len(a) > MAX_ARG_CHARS or "\x00" in a for a in script_args):
        add("script_args", f"At most {MAX_ARGS} script arguments of at most {MAX_ARG_CHARS} characters, without NUL bytes.")
    if max_duration_seconds is not None and (not isinstance(max_duration_seconds, int) or max_duration_seconds < 1):
        add("max_duration_seconds", "Max run duration must be a whole number of seconds, at least 1.")
    entry = entry_script or ""
    if not entry or entry.startswith(("/", "\\")) or ".." in entry.replace("\\", "/").split("/") or "\x00" in entry or "\\" in entry:
        add("entry_script", "The entry script must be a relative path inside the source, like train.py.")
    elif not entry.endswith(".py"):
        add("entry_script", "The entry script must be a .py file.")
    if resume_from is not None and workspace is not None and resume_from.run.experiment.workspace_id != workspace.pk:
        add("resume_from", "The checkpoint belongs to another workspace.")
    if errors:
        raise ValidationError(errors)


def params_to_argv(pairs):
    """[("lr", "0.1"), ...] -> ["--lr", "0.1", ...]: each value one argv item, never split or quoted."""
    argv = []
    for name, value in pairs:
        argv += [f"--{name}", str(value)]
    return argv


def _store_source(source_upload):
    from tracker import storage

    if isinstance(source_upload, tuple):
        stream, filename = source_upload
    else:
        stream, filename = source_upload, getattr(source_upload, "name", "") or "source.py"
    filename = filename.replace("\\", "/").rsplit("/", 1)[-1]
    blob = storage.save_stream(stream, kind="job-sources", max_bytes=getattr(conf, "MAX_SOURCE_BYTES", None))
    return blob.key, filename


def job_timeout(job):
    if job.max_duration_seconds:
        return job.max_duration_seconds + conf.JOB_TIMEOUT_MARGIN
    return conf.DEFAULT_JOB_TIMEOUT


def submit_job(*, user, experiment, cluster, entry_script, source_kind, example_name="", source_upload=None,
               script_args=(), env_vars=None, environment=None, node_count=1, procs_per_node=1,
               backend=Backend.GLOO, use_gpu=False, max_duration_seconds=None, resume_from=None, run_name="",
               idempotency_key=None, params=None):
    """Create a Queued run with its job and enqueue one RQ job per node after commit.

    A repeated `idempotency_key` returns the job it first created (a
    double-clicked submit makes one run). Raises ValidationError on bad input
    before anything is stored or enqueued.
    """
    if idempotency_key:
        existing = Job.objects.filter(idempotency_key=idempotency_key).select_related("run").first()
        if existing is not None:
            if existing.submitted_by_id != user.pk:
                raise ValidationError({"idempotency_key": "This idempotency key was already used."})
            return existing
    script_args = list(script_args or ())
    env_vars = dict(env_vars or {})
    validate_launch(
        cluster=cluster, node_count=node_count, procs_per_node=procs_per_node, backend=backend, use_gpu=use_gpu,
        env_vars=env_vars, script_args=script_args, max_duration_seconds=max_duration_seconds,
        entry_script=entry_script, resume_from=resume_from, workspace=experiment.workspace,
    )
    if source_kind not in SourceKind.values:
        raise ValidationError({"source_kind": f"Unknown source kind {source_kind!r}."})
    if source_kind == SourceKind.EXAMPLE and not example_name:
        raise ValidationError({"example_name": "Choose an example."})
    if source_kind == SourceKind.UPLOAD and source_upload is None:
        raise ValidationError({"source": "Upload a .py file or a .zip/.tar.gz folder."})
    if environment is not None and environment.workspace_id != experiment.workspace_id:
        raise ValidationError({"environment": "That environment belongs to another workspace."})

    blob_key, filename = "", ""
    if source_kind == SourceKind.UPLOAD:
        blob_key, filename = _store_source(source_upload)
    try:
        with transaction.atomic():
            now = timezone.now()
            run = Run.objects.create(
                experiment=experiment, name=run_name or "", created_by=user, status=RunStatus.QUEUED, queued_at=now,
                parent_run=resume_from.run if resume_from is not None else None,
                source_note=example_name and f"example {example_name}" or filename,
            )
            job = Job.objects.create(
                run=run, cluster=cluster, environment=environment, source_kind=source_kind, example_name=example_name,
                source_blob_key=blob_key, source_filename=filename, entry_script=entry_script,
                script_args=script_args, env_vars=env_vars, node_count=node_count, procs_per_node=procs_per_node,
                backend=backend, use_gpu=use_gpu, max_duration_seconds=max_duration_seconds,
                resume_from=resume_from, submitted_by=user, idempotency_key=idempotency_key or None,
            )
            JobNode.objects.bulk_create([JobNode(job=job, node_rank=rank) for rank in range(node_count)])
            if params:
                from tracker.models import Param

                Param.objects.bulk_create([Param(run=run, key=k, value=str(v)) for k, v in params.items()])
            transaction.on_commit(lambda: enqueue_job(job.pk))
    except IntegrityError:
        if idempotency_key:
            existing = Job.objects.filter(idempotency_key=idempotency_key, submitted_by=user).first()
            if existing is not None:
                return existing
        raise
    return job


def _rq_job_alive(rq_job):
    """Queued, or started by a worker that still heart-beats."""
    from jobs.models import ClusterNode

    status = rq_job.get_status(refresh=False)
    if status in ("queued", "scheduled", "deferred"):
        return True
    if status == "started":
        worker_name = getattr(rq_job, "worker_name", None)
        return not worker_name or ClusterNode.objects.alive().filter(name=worker_name).exists() or not (
            ClusterNode.objects.filter(name=worker_name).exists()
        )
    return False


def enqueue_job(job_id, only_missing=False):
    """Put every unclaimed node of the job on its cluster's queue. False (run says why) if Redis is down.

    Nodes whose RQ job is still queued (or running on a live worker) are left
    alone; with `only_missing`, returns True only if something was enqueued.
    """
    from rq.job import Job as RQJob

    job = Job.objects.select_related("cluster", "run").get(pk=job_id)
    if job.run.is_terminal or job.cluster is None:
        return False
    enqueued = 0
    try:
        queue = job.cluster.queue()
        for node in job.nodes.filter(status=JobNodeStatus.PENDING):
            rq_id = node.rq_id_for()
            try:
                rq_job = RQJob.fetch(rq_id, connection=queue.connection)
            except Exception:  # NoSuchJobError and friends: not there
                rq_job = None
            if rq_job is not None and _rq_job_alive(rq_job):
                continue
            status = rq_job.get_status(refresh=False) if rq_job is not None else None
            if status is not None:  # finished/failed/canceled without claiming: next attempt
                JobNode.objects.filter(pk=node.pk, attempt=node.attempt, status=JobNodeStatus.PENDING).update(attempt=node.attempt + 1)
                node.refresh_from_db()
                rq_id = node.rq_id_for()
            queue.enqueue(
                "jobs.tasks.run_job_node", job.pk, node.node_rank, node.attempt,
                job_id=rq_id, job_timeout=job_timeout(job), result_ttl=3600, failure_ttl=7 * 24 * 3600,
                description=f"run {job.run_id} node {node.node_rank}",
            )
            JobNode.objects.filter(pk=node.pk).update(rq_job_id=rq_id, enqueued_at=timezone.now())
            enqueued += 1
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
        logger.warning("job %s stays queued, Redis is unavailable: %s", job.pk, exc)
        Run.objects.filter(pk=job.run_id, status=RunStatus.QUEUED).update(status_reason=WAITING_FOR_QUEUE)
        return False
    Run.objects.filter(pk=job.run_id, status=RunStatus.QUEUED, status_reason=WAITING_FOR_QUEUE).update(status_reason="")
    return bool(enqueued) if only_missing else True


def cancel_job(job, user=None):
    """Cancel a job: immediately when no node has started it, else the nodes kill their process trees.

    Returns True when the run is (or will shortly be) Canceled, False when it had already finished.
    """
    run = Run.objects.get(pk=job.run_id)
    if run.is_terminal:
        return False
    job.request_cancel(user)
    with transaction.atomic():
        # Nodes nobody claimed yet will never start: the claim needs a pending slot.
        pending = list(job.nodes.filter(status=JobNodeStatus.PENDING))
        JobNode.objects.filter(job=job, status=JobNodeStatus.PENDING).update(
            status=JobNodeStatus.CANCELED, finished_at=timezone.now(), reason="canceled before it started"
        )
        if not job.nodes.exclude(status__in=[JobNodeStatus.CANCELED, JobNodeStatus.PENDING]).exists():
            run.finish(RunStatus.CANCELED, f"canceled by {user}" if user else "canceled")
    _cancel_rq_jobs(job, pending)
    return True


def _cancel_rq_jobs(job, nodes):
    from rq.job import Job as RQJob

    if not nodes or job.cluster is None:
        return
    try:
        connection = job.cluster.queue().connection
        for node in nodes:
            try:
                RQJob.fetch(node.rq_id_for(), connection=connection).cancel()
            except Exception:  # gone already, or never enqueued: nothing to cancel
                pass
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
        pass  # the claim check stops it if it is ever dequeued
