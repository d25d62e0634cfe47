from django.core.management.base import BaseCommand, CommandError

from jobs.models import ComputeCluster


class Command(BaseCommand):
    help = "Run one node of a compute cluster: an RQ worker on the cluster's queue that heart-beats into the database."

    def add_arguments(self, parser):
        parser.add_argument("--cluster", required=True, help="cluster name")
        parser.add_argument("--workspace", help="workspace slug (needed when several workspaces have a cluster of that name)")
        parser.add_argument("--gpus", default="", help="GPU indices this node hands to jobs, e.g. 0,1")
        parser.add_argument("--burst", action="store_true", help="exit once the queue is empty")
        parser.add_argument("--managed", action="store_true", help="started by the supervisor (may be scaled down)")

    def handle(self, *args, **options):
        from jobs.worker import run_worker

        clusters = ComputeCluster.objects.filter(name=options["cluster"])
        if options["workspace"]:
            clusters = clusters.filter(workspace__slug=options["workspace"])
        clusters = list(clusters.select_related("workspace")[:2])
        if not clusters:
            raise CommandError(f"no cluster named {options['cluster']!r}" + (f" in workspace {options['workspace']!r}" if options["workspace"] else ""))
        if len(clusters) > 1:
            raise CommandError(f"several workspaces have a cluster named {options['cluster']!r}: pass --workspace")
        gpus = options["gpus"].strip()
        if gpus and not all(part.strip().isdigit() for part in gpus.split(",")):
            raise CommandError(f"--gpus must be comma-separated GPU indices like 0,1, got {gpus!r}")
        cluster = clusters[0]
        node = run_worker(cluster, gpus=gpus, burst=options["burst"], managed=options["managed"])
        self.stdout.write(f"node {node.name} of cluster {cluster.name} stopped")
