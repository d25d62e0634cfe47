"""The reconciler: makes the database agree with what is really alive.

- a job node whose heartbeat stopped for more than NODE_LOST_SECONDS fails
  its run with "node lost" (metrics and logs already stored are kept);
- a worker that stopped heart-beating is marked unreachable;
- a live job whose RQ job disappeared (Redis restarted without its data,
  a worker died between dequeue and claim) is enqueued again.

Every write is conditional, so running it twice, or next to a node that
wakes up late, changes nothing twice.
"""

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from django.db.models import Q
from django.utils import timezone

from jobs import conf
from jobs.models import JOB_NODE_ACTIVE, ClusterNode, Job, JobNode, JobNodeStatus, NodeStatus
from tracker.models import TERMINAL_STATUSES, Run, RunStatus

logger = logging.getLogger("torchlight.jobs")


@dataclass
class ReconcileReport:
    lost_nodes: list = field(default_factory=list)
    unreachable_workers: list = field(default_factory=list)
    enqueued_jobs: list = field(default_factory=list)
    registry_tasks: dict = field(default_factory=dict)

    def __str__(self):
        return (f"{len(self.lost_nodes)} job nodes lost, {len(self.unreachable_workers)} workers unreachable, "
                f"{len(self.enqueued_jobs)} jobs enqueued again")


def reconcile(lost_after=None, now=None):
    lost_after = conf.NODE_LOST_SECONDS if lost_after is None else lost_after
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=lost_after)
    report = ReconcileReport()

    for worker in ClusterNode.objects.alive().filter(last_heartbeat__lt=cutoff):
        if ClusterNode.objects.filter(pk=worker.pk, status=worker.status, last_heartbeat__lt=cutoff).update(
            status=NodeStatus.UNREACHABLE
        ):
            report.unreachable_workers.append(worker.name)

    stale = JobNode.objects.filter(status__in=JOB_NODE_ACTIVE).filter(
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, claimed_at__lt=cutoff)
    ).select_related("worker")
    for node in stale:
        marked = JobNode.objects.filter(pk=node.pk, attempt=node.attempt, status=node.status).filter(
            Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True)
        ).update(status=JobNodeStatus.LOST, finished_at=now, reason="node lost")
        if not marked:
            continue
        where = f" ({node.worker.name} on {node.worker.hostname})" if node.worker else ""
        reason = f"node lost: node {node.node_rank}{where} stopped heart-beating for more than {lost_after} s"
        run = Run.objects.get(job__pk=node.job_id)
        run.finish(RunStatus.FAILED, reason)
        report.lost_nodes.append((node.job_id, node.node_rank))
        logger.warning("job %s: %s", node.job_id, reason)

    # A live job whose cluster was deleted can never be picked up.
    orphaned = Job.objects.filter(cluster__isnull=True).exclude(
        run__status__in=TERMINAL_STATUSES
    ).select_related("run")
    for job in orphaned:
        if not job.nodes.filter(status__in=JOB_NODE_ACTIVE).exists():
            job.run.finish(RunStatus.FAILED, "the job's compute cluster was deleted")

    from jobs.services import enqueue_job

    queued_jobs = (
        Job.objects.filter(nodes__status=JobNodeStatus.PENDING, cancel_requested_at__isnull=True)
        .exclude(run__status__in=TERMINAL_STATUSES)
        .distinct()
        .values_list("pk", flat=True)
    )
    for job_id in queued_jobs:
        if enqueue_job(job_id, only_missing=True):
            report.enqueued_jobs.append(job_id)

    # Registry exports and "try it" requests are RQ jobs too: resend lost ones, fail runaway ones.
    from registry.services import reconcile_tasks

    report.registry_tasks = reconcile_tasks()
    return report
