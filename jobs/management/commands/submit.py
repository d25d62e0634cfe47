"""`manage.py submit`: launch a training job from the command line, like the web form does."""

import io
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.urls import reverse

from jobs.models import Backend, ComputeCluster, Environment, read_log
from jobs.node import EXAMPLES_DIR
from jobs.services import params_to_argv, submit_job
from tracker.models import Experiment, Role, Run, Workspace


def bad(message):
    return CommandError(message, returncode=2)


def name_value(text, what):
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise bad(f"{what} {text!r} must look like NAME=VALUE")
    return name, value


class Command(BaseCommand):
    help = "Submit a training job; prints the run id and URL. With --wait, follows it and exits 0 only if it Completed."

    def add_arguments(self, parser):
        parser.add_argument("--experiment", required=True, help="experiment name (created if missing)")
        parser.add_argument("--cluster", required=True, help="compute cluster name")
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--example", help="built-in example name, e.g. digits")
        source.add_argument("--source", help="a .py file, a .zip/.tar.gz archive or a folder")
        parser.add_argument("--entry", help="entry script inside the source (default: the example's train.py or the .py file)")
        parser.add_argument("--workspace", default="default", help="workspace slug (default: default)")
        parser.add_argument("--user", help="submit as this user (default: the workspace's first owner)")
        parser.add_argument("--name", default="", help="run name")
        parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="script param, passed as --NAME VALUE")
        parser.add_argument("--pip", action="append", default=[], metavar="REQ", help="pip requirement of the environment")
        parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="environment variable")
        parser.add_argument("--nodes", type=int, default=1)
        parser.add_argument("--procs-per-node", type=int, default=1)
        parser.add_argument("--backend", choices=Backend.values, default=Backend.GLOO)
        parser.add_argument("--gpu", action="store_true", help="use GPUs")
        parser.add_argument("--max-duration", type=int, default=None, metavar="SECONDS")
        parser.add_argument("--wait", action="store_true", help="follow the stages and the log until the run ends")

    def handle(self, *args, **options):
        workspace = Workspace.objects.filter(slug=options["workspace"]).first()
        if workspace is None:
            raise bad(f"no workspace {options['workspace']!r}")
        user = self.get_user(workspace, options["user"])
        cluster = ComputeCluster.objects.filter(workspace=workspace, name=options["cluster"]).first()
        if cluster is None:
            raise bad(f"no cluster {options['cluster']!r} in workspace {workspace.slug!r}")
        experiment, _ = Experiment.objects.get_or_create(workspace=workspace, name=options["experiment"], defaults={"created_by": user})
        params = [name_value(p, "--param") for p in options["param"]]
        env_vars = dict(name_value(e, "--env") for e in options["env"])
        environment = self.get_environment(workspace, user, options["pip"])
        common = dict(
            user=user, experiment=experiment, cluster=cluster, script_args=params_to_argv(params), env_vars=env_vars,
            environment=environment, node_count=options["nodes"], procs_per_node=options["procs_per_node"],
            backend=options["backend"], use_gpu=options["gpu"], max_duration_seconds=options["max_duration"],
            run_name=options["name"], params=dict(params),
        )
        try:
            if options["example"]:
                example = options["example"]
                if "/" in example or not (EXAMPLES_DIR / example).is_dir():
                    known = ", ".join(sorted(p.name for p in EXAMPLES_DIR.iterdir() if p.is_dir() and not p.name.startswith("_")))
                    raise bad(f"no built-in example {example!r} (known: {known})")
                job = submit_job(source_kind="example", example_name=example, entry_script=options["entry"] or "train.py", **common)
            else:
                stream, filename, entry = self.read_source(Path(options["source"]), options["entry"])
                job = submit_job(source_kind="upload", source_upload=(stream, filename), entry_script=entry, **common)
        except ValidationError as exc:
            messages = [f"{k}: {m}" for k, ms in exc.message_dict.items() for m in ms] if hasattr(exc, "error_dict") else exc.messages
            raise bad("; ".join(messages)) from None
        url = settings.SITE_URL.rstrip("/") + reverse("tracker:run-detail", args=[job.run_id])
        self.stdout.write(f"{job.run_id} {url}")
        if options["wait"]:
            self.follow(job.run_id)

    def get_user(self, workspace, username):
        User = get_user_model()
        if username:
            user = User.objects.filter(username=username).first()
            if user is None or workspace.role_of(user) not in (Role.CONTRIBUTOR, Role.OWNER):
                raise bad(f"user {username!r} is not a contributor of workspace {workspace.slug!r}")
            return user
        membership = workspace.memberships.filter(role=Role.OWNER).select_related("user").order_by("created_at").first()
        if membership is None:
            raise bad(f"workspace {workspace.slug!r} has no owner: pass --user")
        return membership.user

    def get_environment(self, workspace, user, requirements):
        if not requirements:
            return None
        try:
            parsed = Environment.parse_requirements("\n".join(requirements))
        except ValidationError as exc:
            raise bad("--pip: " + "; ".join(exc.messages)) from None
        digest = Environment.hash_requirements(parsed)
        environment, _ = Environment.objects.get_or_create(
            workspace=workspace, name=f"pip-{digest[:12]}", defaults={"requirements": "\n".join(parsed), "created_by": user}
        )
        return environment

    def read_source(self, path, entry):
        from jobs.source_archive import validate_source

        if not path.exists():
            raise bad(f"--source {path}: no such file or folder")
        if path.is_dir():
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
                for file in sorted(path.rglob("*")):
                    if file.is_file() and not file.is_symlink() and "__pycache__" not in file.parts:
                        archive.write(file, file.relative_to(path).as_posix())
            buffer.seek(0)
            stream, filename = buffer, f"{path.name or 'source'}.zip"
        else:
            spooled = tempfile.SpooledTemporaryFile(max_size=16 * 1024 * 1024)
            with open(path, "rb") as handle:
                shutil.copyfileobj(handle, spooled)
            spooled.seek(0)
            stream, filename = spooled, path.name
        try:
            members = validate_source(stream, filename)
        except ValidationError as exc:
            raise bad(f"--source {path}: {'; '.join(exc.messages)}") from None
        stream.seek(0)
        if entry is None:
            if filename.endswith(".py"):
                entry = members[0]
            else:
                raise bad("--entry is needed with an archive or a folder")
        if entry not in members:
            raise bad(f"--entry {entry!r} is not in the source (it has: {', '.join(members[:10])})")
        return stream, filename, entry

    def follow(self, run_id):
        offset, status = 0, None
        while True:
            run = Run.objects.get(pk=run_id)
            if run.status != status:
                status = run.status
                self.stdout.write(f"== {run.get_status_display()}" + (f": {run.status_reason}" if run.status_reason and run.is_terminal else ""))
            lines, offset = read_log(run, offset, 1000)
            for line in lines:
                prefix = f"[node {line.node_rank}{'' if line.rank is None else f' rank {line.rank}'}] " if run.job.node_count > 1 or line.rank else ""
                self.stdout.write(f"{prefix}{line.text}")
            if run.is_terminal and not lines:
                break
            self.stdout.flush()
            time.sleep(0.5)
        if run.status != "completed":
            sys.stdout.flush()
            raise CommandError(f"run {run.get_status_display()}: {run.status_reason}", returncode=1)
