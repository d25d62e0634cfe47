"""Export a model version to ONNX on a cluster's worker; with --wait, print the result and parity."""

import time

from django.core.management.base import BaseCommand, CommandError

from jobs.models import ComputeCluster
from registry import services
from registry.management.commands._common import find_model
from registry.models import OnnxExport, TaskStatus


class Command(BaseCommand):
    help = "Export model NAME version VERSION to ONNX (an RQ job on a cluster); exit status 0 only on success."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("version", type=int)
        parser.add_argument("--opset", type=int, default=None)
        parser.add_argument("--cluster", default="", help="Cluster name (default: the workspace's only or first cluster)")
        parser.add_argument("--workspace", default="")
        parser.add_argument("--wait", action="store_true", help="Wait for the export and print the parity figures")
        parser.add_argument("--timeout", type=float, default=1800, help="Seconds to wait with --wait")

    def handle(self, *args, **opts):
        model = find_model(opts["name"], opts["workspace"])
        version = model.versions.filter(version=opts["version"]).first()
        if version is None:
            raise CommandError(f"{model.name} has no version {opts['version']}")
        clusters = ComputeCluster.objects.filter(workspace=model.workspace)
        cluster = clusters.filter(name=opts["cluster"]).first() if opts["cluster"] else clusters.order_by("pk").first()
        if cluster is None:
            raise CommandError(
                f"no cluster {opts['cluster']!r} in {model.workspace.slug}" if opts["cluster"] else f"{model.workspace.slug} has no cluster"
            )
        try:
            export = services.request_onnx_export(version=version, cluster=cluster, opset=opts["opset"])
        except services.RegistrationError as exc:
            raise CommandError(exc.message) from None
        if not opts["wait"]:
            self.stdout.write(f"ONNX export #{export.pk} of {model.name} v{version.version} queued on {cluster.name}")
            return
        deadline = time.monotonic() + opts["timeout"]
        while True:
            export = OnnxExport.objects.select_related("result_version").get(pk=export.pk)
            if export.is_terminal:
                break
            if time.monotonic() > deadline:
                raise CommandError(f"export #{export.pk} is still {export.status} after {opts['timeout']:.0f} s ({export.message or 'no worker took it?'})")
            time.sleep(0.5)
        if export.status != TaskStatus.COMPLETED:
            raise CommandError(f"export #{export.pk} failed: {export.message}")
        result = export.result_version
        parity = result.parity or {}
        self.stdout.write(
            f"Exported {model.name} v{version.version} to ONNX version {result.version} "
            f"(opset {export.opset}, {parity.get('exporter')} exporter): max abs diff {parity.get('max_abs_diff', float('nan')):.3g}, "
            f"max rel diff {parity.get('max_rel_diff', float('nan')):.3g}, parity {'passed' if parity.get('passed') else 'FAILED'}"
        )
        if not parity.get("passed"):
            raise CommandError("the ONNX model's outputs differ from PyTorch beyond the tolerance")
