"""Register a run's output file or folder as a new model version."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from registry import services
from registry.models import Flavour, InputDtype
from tracker.models import Run


class Command(BaseCommand):
    help = "Register a run's artifact (a file or a folder prefix) as the next version of a model; prints the version."

    def add_arguments(self, parser):
        parser.add_argument("--run", required=True, help="Run id (UUID)")
        parser.add_argument("--path", required=True, help="Artifact path in the run, e.g. outputs/model.pt or outputs/")
        parser.add_argument("--name", required=True, help="Model name (created if new)")
        parser.add_argument("--flavour", default=Flavour.STATE_DICT, choices=Flavour.values)
        parser.add_argument("--arch", default="", help="torchvision:resnet18 or module:Class (from the run's source)")
        parser.add_argument("--arch-arg", action="append", default=[], metavar="KEY=VALUE", help="Architecture argument (repeatable)")
        parser.add_argument("--input-shape", default="", help="Batch first, e.g. 1,3,224,224")
        parser.add_argument("--input-dtype", default=InputDtype.FLOAT32, choices=InputDtype.values)
        parser.add_argument("--description", default="")
        parser.add_argument("--workspace", default="", help="Workspace slug the run must belong to")
        parser.add_argument("--user", default="", help="Username recorded as the registrant")
        parser.add_argument("--trust", action="store_true", help="Trust a full pickle: loading it runs code")

    def handle(self, *args, **opts):
        try:
            run = Run.objects.select_related("experiment__workspace").filter(pk=opts["run"]).first()
        except Exception:
            run = None
        if run is None or (opts["workspace"] and run.experiment.workspace.slug != opts["workspace"]):
            raise CommandError(f"no run {opts['run']}" + (f" in workspace {opts['workspace']}" if opts["workspace"] else ""))
        user = None
        if opts["user"]:
            user = get_user_model().objects.filter(username=opts["user"]).first()
            if user is None:
                raise CommandError(f"no user {opts['user']!r}")
        try:
            version = services.register_from_run(
                run=run, path=opts["path"], name=opts["name"], user=user or run.created_by,
                flavour=opts["flavour"], architecture=opts["arch"], arch_kwargs=opts["arch_arg"],
                input_shape=opts["input_shape"] or None, input_dtype=opts["input_dtype"],
                description=opts["description"], trusted=opts["trust"],
            )
        except services.RegistrationError as exc:
            raise CommandError(exc.message) from None
        files = list(version.files.all())
        digest = files[0].sha256[:12] if len(files) == 1 else f"{len(files)} files"
        self.stdout.write(
            f"Registered {version.model.name} version {version.version} ({version.flavour}, {version.total_size} bytes, sha256 {digest})"
        )
