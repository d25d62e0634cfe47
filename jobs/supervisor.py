"""The supervisor of `local` clusters: starts worker nodes when jobs wait, stops idle ones, reconciles.

For each local cluster it keeps between min_nodes and max_nodes worker
processes (`manage.py worker --managed`): enough for the busy nodes plus the
job nodes still waiting, and it stops (SIGTERM: rq's warm shutdown) a node
that has been idle longer than the cluster's idle timeout. This is the
Scaling users see. Every RECONCILE_SECONDS it runs the reconciler.
"""

import logging
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from jobs import conf
from jobs.models import ClusterKind, ClusterNode, ComputeCluster, NodeStatus
from jobs.reconciler import reconcile

logger = logging.getLogger("torchlight.jobs")


class Supervisor:
    def __init__(self, interval=1.0, reconcile_every=None, log=None):
        self.interval = interval
        self.reconcile_every = conf.RECONCILE_SECONDS if reconcile_every is None else reconcile_every
        self.procs = {}  # cluster pk -> [Popen]
        self.last_reconcile = 0.0
        self.stopping = False
        self.log = log or (lambda message: logger.info(message))

    def start_node(self, cluster):
        argv = [sys.executable, str(settings.BASE_DIR / "manage.py"), "worker", "--cluster", cluster.name,
                "--workspace", cluster.workspace.slug, "--managed"]
        slot = None
        if cluster.gpus_per_node:
            # Node i of a GPU cluster gets GPUs [i*g, (i+1)*g): no two nodes share a device.
            used = {getattr(p, "_torchlight_slot", None) for p in self.procs.get(cluster.pk, [])}
            slot = next(i for i in range(cluster.max_nodes + 1) if i not in used)
            first = slot * cluster.gpus_per_node
            argv += ["--gpus", ",".join(str(g) for g in range(first, first + cluster.gpus_per_node))]
        proc = subprocess.Popen(argv, cwd=str(settings.BASE_DIR), env=dict(os.environ), start_new_session=True,
                                stdin=subprocess.DEVNULL)
        proc._torchlight_slot = slot
        self.procs.setdefault(cluster.pk, []).append(proc)
        self.log(f"cluster {cluster.name}: started node (pid {proc.pid})")
        return proc

    def stop_node(self, cluster, proc):
        try:
            proc.send_signal(signal.SIGTERM)  # rq warm shutdown: an idle worker leaves at once
        except ProcessLookupError:
            pass
        self.log(f"cluster {cluster.name}: stopping idle node (pid {proc.pid})")

    def scale(self, cluster):
        procs = [p for p in self.procs.get(cluster.pk, []) if p.poll() is None]
        self.procs[cluster.pk] = procs
        nodes = {n.pid: n for n in ClusterNode.objects.alive().filter(cluster=cluster, managed=True, pid__in=[p.pid for p in procs])}
        busy = sum(1 for n in nodes.values() if n.status == NodeStatus.BUSY)
        waiting = cluster.waiting_node_count()
        want = min(cluster.max_nodes, max(cluster.min_nodes, busy + waiting))
        if len(procs) < want:
            for _ in range(want - len(procs)):
                self.start_node(cluster)
            return
        if len(procs) <= max(cluster.min_nodes, want):
            return
        idle_cutoff = timezone.now() - timedelta(seconds=cluster.idle_seconds_before_scaledown)
        surplus = len(procs) - max(cluster.min_nodes, want)
        for proc in procs:
            if surplus <= 0:
                break
            node = nodes.get(proc.pid)
            if node is not None and node.status == NodeStatus.IDLE and node.idle_since and node.idle_since < idle_cutoff:
                if getattr(proc, "_torchlight_stopping", False):
                    continue
                proc._torchlight_stopping = True
                self.stop_node(cluster, proc)
                surplus -= 1

    def tick(self):
        close_old_connections()
        for cluster in ComputeCluster.objects.filter(kind=ClusterKind.LOCAL).select_related("workspace"):
            try:
                self.scale(cluster)
            except Exception:
                logger.exception("scaling cluster %s failed", cluster.name)
        if time.monotonic() - self.last_reconcile >= self.reconcile_every:
            self.last_reconcile = time.monotonic()
            try:
                report = reconcile()
                if report.lost_nodes or report.enqueued_jobs or report.unreachable_workers:
                    self.log(f"reconciler: {report}")
            except Exception:
                logger.exception("reconciler failed")

    def run_forever(self):
        def stop(signum, frame):
            self.stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            while not self.stopping:
                self.tick()
                time.sleep(self.interval)
        finally:
            self.shutdown()

    def shutdown(self, grace=10.0):
        procs = [p for group in self.procs.values() for p in group if p.poll() is None]
        for proc in procs:
            try:
                proc.send_signal(signal.SIGTERM)  # warm: a running job finishes its current step of shutdown
                proc.send_signal(signal.SIGTERM)  # second one: cold, rq kills the horse (and we the script)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
