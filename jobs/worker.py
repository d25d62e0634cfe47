"""A cluster node: an RQ worker on the cluster's queue that registers itself and heart-beats into the database."""

import logging
import os
import signal
import socket
import threading
import uuid

from django.db import connection, connections
from django.utils import timezone
from rq import Worker

from jobs import conf
from jobs.models import ClusterNode, NodeStatus

logger = logging.getLogger("torchlight.jobs")


class NodeWorker(Worker):
    """rq.Worker that keeps its ClusterNode row current: busy while a job runs, idle otherwise."""

    cluster_node = None

    def fork_work_horse(self, job, queue):
        # The horse must open its own database connections, never share the parent's.
        connections.close_all()
        return super().fork_work_horse(job, queue)

    def kill_horse(self, sig=None):
        # The script runs in a session of its own: killing the horse's group would orphan it.
        self.kill_running_scripts()
        return super().kill_horse(*([sig] if sig is not None else []))

    def kill_running_scripts(self):
        from jobs.models import JOB_NODE_ACTIVE, JobNode

        if self.cluster_node is None:
            return
        groups = JobNode.objects.filter(worker=self.cluster_node, status__in=JOB_NODE_ACTIVE, process_group__isnull=False)
        for pgid in groups.values_list("process_group", flat=True):
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def execute_job(self, job, queue):
        try:
            return super().execute_job(job, queue)
        finally:
            if self.cluster_node is not None:
                self.fail_orphaned_job_nodes()
                self.cluster_node.mark_idle()

    def fail_orphaned_job_nodes(self):
        """The horse is gone; a job node it left active (horse OOM-killed, timed out) ends here, script and all."""
        from jobs.models import JOB_NODE_ACTIVE, JobNode, JobNodeStatus
        from tracker.models import RunStatus

        for node in JobNode.objects.filter(worker=self.cluster_node, status__in=JOB_NODE_ACTIVE).select_related("job__run"):
            if node.process_group:
                try:
                    os.killpg(node.process_group, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            reason = f"node {node.node_rank} failed: the worker's job process died (killed or out of memory)"
            if node.set_status(JobNodeStatus.FAILED, reason=reason):
                node.job.run.finish(RunStatus.FAILED, reason)


def register_node(cluster, gpus="", managed=False):
    hostname = socket.gethostname()
    name = f"{cluster.queue_name}.{hostname}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
    now = timezone.now()
    return ClusterNode.objects.create(
        cluster=cluster, name=name, hostname=hostname, pid=os.getpid(), gpus=gpus, managed=managed,
        status=NodeStatus.IDLE, last_heartbeat=now, idle_since=now,
    )


class NodeHeartbeat(threading.Thread):
    def __init__(self, node):
        super().__init__(name="node-heartbeat", daemon=True)
        self.node = node
        self.stopping = threading.Event()
        self.parent_pid = os.getppid()

    def run(self):
        try:
            while not self.stopping.wait(conf.HEARTBEAT_SECONDS):
                if self.node.managed and os.getppid() != self.parent_pid:
                    # The supervisor that started us is gone: leave (warm shutdown, a running job finishes).
                    os.kill(os.getpid(), signal.SIGTERM)
                    self.parent_pid = os.getppid()
                try:
                    self.node.beat()
                except Exception:
                    logger.exception("node heartbeat failed")
        finally:
            connection.close()

    def stop(self):
        self.stopping.set()
        self.join(timeout=10)


def run_worker(cluster, *, gpus="", burst=False, managed=False, redis_connection=None):
    """Serve the cluster's queue until stopped (or, with burst, until it is empty). Returns the ClusterNode."""
    from config.redis import get_connection

    node = register_node(cluster, gpus=gpus, managed=managed)
    # Import torch once in the registry's warm loader so the first ONNX export does not pay for it.
    from registry.workdir import warm_loader

    warm_loader()
    os.environ["TORCHLIGHT_WORKER_NODE_ID"] = str(node.pk)  # inherited by the work horse
    heartbeat = NodeHeartbeat(node)
    heartbeat.start()
    worker = NodeWorker([cluster.queue_name], name=node.name, connection=redis_connection or get_connection(),
                        job_monitoring_interval=5)
    worker.cluster_node = node
    try:
        worker.work(burst=burst, with_scheduler=False, logging_level="WARNING")
    finally:
        heartbeat.stop()
        node.mark_stopped()
    return node
