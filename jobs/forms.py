"""Forms for clusters, environments and the job launch form.

`JobLaunchForm` is the one place launch input is validated: the web form,
the REST API (`jobs/api_views.py` feeds it the JSON body) and "Clone and
edit" all go through it. It checks the source (archive members, entry script
present), the parameter and environment-variable rows, pip requirements and
the cross-field launch rules (`jobs.services.validate_launch`) before
anything is stored or enqueued; `launch()` then calls `submit_job` with the
form's idempotency token, so a double-clicked submit makes one run.
"""

import re
import uuid

from django import forms
from django.core import signing
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q, Subquery
from django.utils.html import format_html, format_html_join

from jobs.examples import example_choices, get_example
from jobs.models import Backend, ComputeCluster, Environment, SourceKind
from jobs.source_archive import source_kind as archive_kind
from jobs.source_archive import validate_source
from tracker.models import Artifact, Experiment

PARAM_NAME = re.compile(r"^-{0,2}[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors", ".tar")
MAX_ROWS = 100
MAX_CHECKPOINT_CHOICES = 200
SOURCE_ID_SALT = "jobs.source-upload"
SOURCE_ID_MAX_AGE = 7 * 24 * 3600


class RowsWidget(forms.Widget):
    """A table of name/value rows posted as `<name>_name` / `<name>_value` lists; jobs_form.js adds and removes rows."""

    def __init__(self, name_label="Name", value_label="Value", name_placeholder="", attrs=None):
        super().__init__(attrs)
        self.name_label = name_label
        self.value_label = value_label
        self.name_placeholder = name_placeholder

    def value_from_datadict(self, data, files, name):
        names = data.getlist(f"{name}_name") if hasattr(data, "getlist") else data.get(f"{name}_name", [])
        values = data.getlist(f"{name}_value") if hasattr(data, "getlist") else data.get(f"{name}_value", [])
        values = list(values) + [""] * (len(names) - len(values))
        return [(n, v) for n, v in zip(names, values, strict=False)]

    def value_omitted_from_data(self, data, files, name):
        return False

    def render(self, name, value, attrs=None, renderer=None):
        rows = [(n, v) for n, v in (value or []) if n or v] + [("", "")]
        body = format_html_join(
            "",
            '<tr class="row-item"><td><input type="text" name="{0}_name" value="{1}" placeholder="{3}" aria-label="{4}"></td>'
            '<td><input type="text" name="{0}_value" value="{2}" aria-label="{5}"></td>'
            '<td><button type="button" class="small" data-remove-row>Remove</button></td></tr>',
            ((name, n, v, self.name_placeholder, self.name_label, self.value_label) for n, v in rows),
        )
        return format_html(
            '<table class="data rows" id="id_{0}" data-rows="{0}"><thead><tr><th>{1}</th><th>{2}</th><th></th></tr></thead>'
            '<tbody>{3}</tbody></table><button type="button" class="small" data-add-row="{0}">Add row</button>',
            name, self.name_label, self.value_label, body,
        )


class RowsField(forms.Field):
    """A list of (name, value) pairs; blank rows are dropped."""

    widget = RowsWidget

    def to_python(self, value):
        if value in (None, ""):
            return []
        if isinstance(value, dict):
            value = list(value.items())
        rows = []
        for row in value:
            if not isinstance(row, (list, tuple)) or len(row) != 2:
                raise ValidationError("Each row needs a name and a value.")
            name, val = ("" if row[0] is None else str(row[0])).strip(), "" if row[1] is None else str(row[1])
            if not name and not val:
                continue
            rows.append((name, val))
        if len(rows) > MAX_ROWS:
            raise ValidationError(f"At most {MAX_ROWS} rows.")
        return rows


def params_to_argv(rows):
    """Parameter rows -> argv: `lr`/`--lr` become `--lr`, `-v` stays; each value is one argv item, verbatim; an empty value makes a flag."""
    argv = []
    for name, value in rows:
        argv.append(name if name.startswith("-") else f"--{name}")
        if value != "":
            argv.append(value)
    return argv


OPTION = re.compile(r"^--?[A-Za-z_]")


def argv_to_params(argv):
    """The inverse of params_to_argv, for "Clone and edit": option names with the value that follows them."""
    rows, i = [], 0
    argv = list(argv or [])
    while i < len(argv):
        item = argv[i]
        if OPTION.match(item) and i + 1 < len(argv) and not OPTION.match(argv[i + 1]):
            rows.append((item, argv[i + 1]))
            i += 2
        elif OPTION.match(item):
            rows.append((item, ""))
            i += 1
        else:  # a positional argument: keep it as a row of its own
            rows.append((item, ""))
            i += 1
    return rows


def make_source_id(blob_key, filename, user, workspace):
    """A signed, expiring handle on an uploaded source (POST /api/v1/sources), usable only by its uploader."""
    return signing.dumps({"k": blob_key, "f": filename, "u": user.pk, "w": workspace.pk}, salt=SOURCE_ID_SALT, compress=True)


def read_source_id(source_id, user, workspace):
    """(blob_key, filename) for a source id this user uploaded to this workspace; ValidationError otherwise."""
    try:
        data = signing.loads(source_id, salt=SOURCE_ID_SALT, max_age=SOURCE_ID_MAX_AGE)
    except signing.SignatureExpired:
        raise ValidationError("That uploaded source has expired: upload it again.")
    except signing.BadSignature:
        raise ValidationError("Unknown source id.")
    if data.get("u") != user.pk or data.get("w") != workspace.pk:
        raise ValidationError("Unknown source id.")
    return data["k"], data["f"]


def checkpoint_artifacts(workspace, limit=MAX_CHECKPOINT_CHOICES):
    """The newest `limit` artifacts of runs in the workspace that look like checkpoints."""
    query = None
    for suffix in CHECKPOINT_SUFFIXES:
        clause = Q(path__iendswith=suffix)
        query = clause if query is None else query | clause
    newest = Artifact.objects.filter(run__experiment__workspace=workspace).filter(query).order_by("-created_at")
    # A subquery rather than a slice, so the field can still look a choice up by pk.
    return (
        Artifact.objects.filter(pk__in=Subquery(newest.values("pk")[:limit]))
        .select_related("run", "run__experiment")
        .order_by("-created_at")
    )


class ClusterChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, cluster):
        gpus = f", {cluster.gpus_per_node} × {cluster.gpu_type or 'GPU'}" if cluster.gpus_per_node else ", CPU only"
        return f"{cluster.name} ({cluster.kind}, up to {cluster.max_nodes} node{'s' if cluster.max_nodes != 1 else ''}{gpus})"


class ArtifactChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, artifact):
        return f"{artifact.run.experiment.name} / {artifact.run.display_name} / {artifact.path}"


class JobLaunchForm(forms.Form):
    token = forms.CharField(widget=forms.HiddenInput, max_length=64)
    experiment = forms.ModelChoiceField(queryset=Experiment.objects.none(), required=False, empty_label="— new experiment —")
    new_experiment = forms.CharField(required=False, max_length=200, label="New experiment name")
    run_name = forms.CharField(required=False, max_length=250)
    source_kind = forms.ChoiceField(
        choices=[(SourceKind.EXAMPLE, "Built-in example"), (SourceKind.UPLOAD, "Upload a .py file or a .zip/.tar.gz folder")],
        widget=forms.RadioSelect, initial=SourceKind.EXAMPLE, label="Source",
    )
    example_name = forms.ChoiceField(choices=[("", "—")] + example_choices(), required=False, label="Example", initial="digits")
    source_file = forms.FileField(required=False, label="Source file")
    source_id = forms.CharField(required=False, widget=forms.HiddenInput, max_length=2000)
    entry_script = forms.CharField(max_length=500, required=False, initial="train.py",
                                   help_text="Path of the script inside the source, e.g. train.py or src/train.py.")
    script_args = RowsField(required=False, label="Script parameters",
                            widget=RowsWidget("Name", "Value", name_placeholder="--lr"),
                            help_text="Passed to the script as an argument list (never through a shell): --name value.")
    cluster = ClusterChoiceField(queryset=ComputeCluster.objects.none(), empty_label=None, label="Compute cluster")
    environment = forms.ModelChoiceField(queryset=Environment.objects.none(), required=False,
                                         empty_label="Torchlight's own (torch, torchvision, scikit-learn …)")
    pip_requirements = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}), label="New environment: pip requirements",
                                       help_text="One requirement per line, e.g. timm==1.0.9. Builds (or reuses) an environment on top of Torchlight's.")
    use_gpu = forms.BooleanField(required=False, label="Use GPU")
    node_count = forms.IntegerField(min_value=1, max_value=1000, initial=1)
    procs_per_node = forms.IntegerField(min_value=1, max_value=64, initial=1, label="Processes per node")
    backend = forms.ChoiceField(choices=Backend.choices, initial=Backend.GLOO, label="Distributed backend")
    env_vars = RowsField(required=False, label="Environment variables", widget=RowsWidget("Name", "Value", name_placeholder="MY_SETTING"))
    max_duration_seconds = forms.IntegerField(required=False, min_value=1, label="Max run duration (seconds)")
    resume_from = ArtifactChoiceField(queryset=Artifact.objects.none(), required=False, empty_label="— start fresh —",
                                      label="Resume from checkpoint",
                                      help_text="The file is handed to the script as TORCHLIGHT_RESUME_FROM; the new run links to its run.")

    def __init__(self, *args, workspace, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.workspace = workspace
        self.user = user
        self.source_files = []
        self.fields["experiment"].queryset = Experiment.objects.filter(workspace=workspace, archived=False).order_by("name")
        self.fields["cluster"].queryset = ComputeCluster.objects.filter(workspace=workspace).order_by("name")
        self.fields["environment"].queryset = Environment.objects.filter(workspace=workspace).order_by("name")
        self.fields["resume_from"].queryset = checkpoint_artifacts(workspace)
        if not self.is_bound and not self.initial.get("token"):
            self.initial["token"] = uuid.uuid4().hex

    # --- per-field checks -------------------------------------------------

    def clean_token(self):
        token = self.cleaned_data["token"]
        if not re.match(r"^[A-Za-z0-9_-]{8,64}$", token):
            raise ValidationError("The submission token must be 8 to 64 letters, digits, '-' or '_' (on the page: reload it).")
        return token

    def clean_script_args(self):
        rows = self.cleaned_data["script_args"]
        errors = []
        for number, (name, value) in enumerate(rows, start=1):
            if not name:
                errors.append(f"Row {number}: the value {value!r} has no parameter name.")
            elif not PARAM_NAME.match(name):
                errors.append(f"Row {number}: {name!r} is not a parameter name (letters, digits, _ . -, optionally starting with -- ).")
            elif "\x00" in value:
                errors.append(f"Row {number}: the value contains a NUL byte.")
        if errors:
            raise ValidationError(errors)
        return rows

    def clean_env_vars(self):
        from jobs.services import validate_env_vars

        rows = self.cleaned_data["env_vars"]
        names = [name for name, _ in rows]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValidationError(f"Set each environment variable once: {', '.join(duplicates)} appears more than once.")
        env = dict(rows)
        errors = validate_env_vars(env)
        if errors:
            raise ValidationError(errors)
        return env

    def clean_pip_requirements(self):
        text = self.cleaned_data["pip_requirements"]
        if not text.strip():
            return []
        return Environment.parse_requirements(text)

    def clean_source_file(self):
        upload = self.cleaned_data.get("source_file")
        if upload is None:
            return None
        from jobs.archive_limits import archive_limits

        limit = archive_limits().max_upload_bytes
        if upload.size is not None and upload.size > limit:
            raise ValidationError(f"The upload is larger than the limit of {limit // (1024 * 1024)} MB.")
        archive_kind(upload.name)  # the right kind of file, by name
        self.source_files = validate_source(upload, upload.name)
        return upload

    # --- cross-field checks ---------------------------------------------------

    def clean(self):
        from jobs.services import validate_launch

        data = super().clean()
        self._clean_experiment(data)
        self._clean_source(data)
        if data.get("environment") is not None and data.get("pip_requirements"):
            self.add_error("pip_requirements", "Choose an environment or list new requirements, not both.")
        launch_fields = ("cluster", "node_count", "procs_per_node", "backend", "max_duration_seconds")
        if all(f in data for f in launch_fields) and not self.has_error("entry_script"):
            try:
                validate_launch(
                    cluster=data["cluster"], node_count=data["node_count"], procs_per_node=data["procs_per_node"],
                    backend=data["backend"], use_gpu=data.get("use_gpu", False), env_vars=data.get("env_vars") or {},
                    script_args=params_to_argv(data.get("script_args") or []),
                    max_duration_seconds=data.get("max_duration_seconds"), entry_script=data.get("entry_script") or "x.py",
                    resume_from=data.get("resume_from"), workspace=self.workspace,
                )
            except ValidationError as exc:
                self._add_launch_errors(exc)
        return data

    def _add_launch_errors(self, exc):
        for field, messages in exc.message_dict.items():
            target = field if field in self.fields else None
            for message in messages:
                if target and self.has_error(target):
                    continue
                self.add_error(target, message)

    def _clean_experiment(self, data):
        new_name = (data.get("new_experiment") or "").strip()
        if data.get("experiment") is None and not new_name:
            self.add_error("experiment", "Choose an experiment or name a new one.")
        elif data.get("experiment") is None:
            data["new_experiment"] = new_name

    def _clean_source(self, data):
        kind = data.get("source_kind")
        entry = (data.get("entry_script") or "").strip().removeprefix("./")
        if kind == SourceKind.EXAMPLE:
            example = get_example(data.get("example_name") or "")
            if example is None:
                self.add_error("example_name", "Choose a built-in example.")
                return
            entry = entry or example.entry_script
            files = example.files()
        elif kind == SourceKind.UPLOAD:
            if self.has_error("source_file"):
                return
            if data.get("source_file") is None and data.get("source_id"):
                files = self._files_of_source_id(data)
                if files is None:
                    return
            elif data.get("source_file") is None:
                self.add_error("source_file", "Upload a .py file or a .zip/.tar.gz folder.")
                return
            else:
                files = self.source_files
            if not entry and len(files) == 1 and files[0].endswith(".py"):
                entry = files[0]
        else:
            return
        if not entry:
            self.add_error("entry_script", "Name the entry script, e.g. train.py.")
        elif entry not in files:
            scripts = [f for f in files if f.endswith(".py")]
            listing = ", ".join(scripts[:10]) + (" …" if len(scripts) > 10 else "")
            self.add_error("entry_script", f"{entry} is not in the source. Python files in it: {listing or 'none'}.")
        data["entry_script"] = entry

    def _files_of_source_id(self, data):
        from tracker import storage

        try:
            key, filename = read_source_id(data["source_id"], self.user, self.workspace)
            with storage.open_blob(key) as blob:
                files = validate_source(blob, filename)
        except ValidationError as exc:
            self.add_error("source_id", exc)
            return None
        except (OSError, storage.StorageError):
            self.add_error("source_id", "That uploaded source is gone: upload it again.")
            return None
        data["_source_blob"] = (key, filename)
        return files

    def keep_uploaded_source(self):
        """After errors elsewhere, store a good uploaded source so the user need not pick the file again.

        Returns (source_id, filename) or None (no upload, or the upload itself was bad).
        """
        from tracker import storage

        upload = getattr(self, "cleaned_data", {}).get("source_file")
        if upload is None or self.has_error("source_file"):
            return None
        upload.seek(0)
        try:
            blob = storage.save_stream(upload, kind="job-sources")
        except storage.StorageError:
            return None
        return make_source_id(blob.key, upload.name, self.user, self.workspace), upload.name

    # --- launching --------------------------------------------------------------

    @property
    def idempotency_key(self):
        return f"form-{self.user.pk}-{self.cleaned_data['token']}"

    def launch(self):
        """Create what the form asks for (experiment, environment) and submit the job; returns the Job.

        Call only after is_valid(). A ValidationError from submit_job lands on
        the form (is_valid() turns False) and nothing is kept.
        """
        from jobs.services import submit_job
        from tracker import storage

        data = self.cleaned_data
        try:
            with transaction.atomic():
                experiment = data.get("experiment") or self._get_or_create_experiment(data["new_experiment"])
                environment = data.get("environment") or self._environment_for(data.get("pip_requirements"))
                upload = None
                if data["source_kind"] == SourceKind.UPLOAD:
                    if data.get("source_file") is not None:
                        upload = (data["source_file"], data["source_file"].name)
                    else:
                        key, filename = data["_source_blob"]
                        upload = (storage.open_blob(key), filename)
                try:
                    return submit_job(
                        user=self.user, experiment=experiment, cluster=data["cluster"],
                        entry_script=data["entry_script"], source_kind=data["source_kind"],
                        example_name=data.get("example_name", "") if data["source_kind"] == SourceKind.EXAMPLE else "",
                        source_upload=upload, script_args=params_to_argv(data.get("script_args") or []),
                        env_vars=data.get("env_vars") or {}, environment=environment,
                        node_count=data["node_count"], procs_per_node=data["procs_per_node"], backend=data["backend"],
                        use_gpu=data.get("use_gpu", False), max_duration_seconds=data.get("max_duration_seconds"),
                        resume_from=data.get("resume_from"), run_name=data.get("run_name", ""),
                        idempotency_key=self.idempotency_key,
                    )
                finally:
                    if upload is not None and data.get("source_file") is None:
                        upload[0].close()
        except ValidationError as exc:
            self._add_launch_errors(exc) if hasattr(exc, "error_dict") else self.add_error(None, exc)
            return None

    def _get_or_create_experiment(self, name):
        try:
            with transaction.atomic():
                experiment, _ = Experiment.objects.get_or_create(
                    workspace=self.workspace, name=name, defaults={"created_by": self.user}
                )
        except IntegrityError:
            experiment = Experiment.objects.get(workspace=self.workspace, name=name)
        if experiment.archived:
            raise ValidationError({"new_experiment": f"Experiment {name!r} is archived: unarchive it or pick another name."})
        return experiment

    def _environment_for(self, requirements):
        """An environment with exactly these requirements: an existing one, or a new one named after its hash."""
        if not requirements:
            return None
        digest = Environment.hash_requirements(requirements)
        existing = Environment.objects.filter(workspace=self.workspace, requirements_hash=digest).first()
        if existing is not None:
            return existing
        environment = Environment(
            workspace=self.workspace, name=f"pip-{digest[:10]}", requirements="\n".join(requirements), created_by=self.user
        )
        environment.save()
        return environment


def clone_initial(job, user):
    """Initial data for the launch form from an earlier job ("Clone and edit").

    An uploaded source is carried over as a source id, so the clone runs the
    same files unless the user uploads new ones.
    """
    initial = job.clone_initial()
    if job.source_kind == SourceKind.UPLOAD and job.source_blob_key:
        initial["source_id"] = make_source_id(job.source_blob_key, job.source_filename, user, job.run.experiment.workspace)
        initial["source_filename"] = job.source_filename
    initial["script_args"] = argv_to_params(initial.get("script_args"))
    initial["env_vars"] = sorted((initial.get("env_vars") or {}).items())
    initial["run_name"] = f"{job.run.name} (clone)" if job.run.name else ""
    if job.environment_id is None:
        initial["environment"] = None
    return initial


class ClusterForm(forms.ModelForm):
    class Meta:
        model = ComputeCluster
        fields = ["name", "kind", "vm_size", "cpus_per_node", "memory_gb_per_node", "gpus_per_node", "gpu_type",
                  "min_nodes", "max_nodes", "idle_seconds_before_scaledown"]
        labels = {
            "vm_size": "Node size (free text)",
            "cpus_per_node": "CPUs per node",
            "memory_gb_per_node": "Memory per node (GB)",
            "gpus_per_node": "GPUs per node",
            "idle_seconds_before_scaledown": "Idle seconds before scale-down",
        }

    def __init__(self, *args, workspace, **kwargs):
        super().__init__(*args, **kwargs)
        self.workspace = workspace
        self.instance.workspace = workspace

    def clean_name(self):
        name = self.cleaned_data["name"].strip()
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$", name):
            raise ValidationError("Use letters, digits, '_', '.' and '-' (the worker command names the cluster).")
        clash = ComputeCluster.objects.filter(workspace=self.workspace, name=name).exclude(pk=self.instance.pk)
        if clash.exists():
            raise ValidationError(f"There is already a cluster called {name} in this workspace.")
        return name

    def clean_cpus_per_node(self):
        value = self.cleaned_data["cpus_per_node"]
        if value < 1:
            raise ValidationError("A node needs at least 1 CPU.")
        return value

    def clean_memory_gb_per_node(self):
        value = self.cleaned_data["memory_gb_per_node"]
        if value is None or value <= 0:
            raise ValidationError("Memory per node must be positive.")
        return value

    def clean(self):
        data = super().clean()
        low, high = data.get("min_nodes"), data.get("max_nodes")
        if high is not None and high < 1:
            self.add_error("max_nodes", "Max nodes must be at least 1.")
        elif low is not None and high is not None and low > high:
            self.add_error("min_nodes", f"Min nodes ({low}) cannot be above max nodes ({high}).")
        if data.get("gpus_per_node") == 0 and data.get("gpu_type"):
            self.add_error("gpu_type", "A GPU type needs at least 1 GPU per node.")
        return data


class EnvironmentForm(forms.ModelForm):
    class Meta:
        model = Environment
        fields = ["name", "requirements"]
        widgets = {"requirements": forms.Textarea(attrs={"rows": 8, "placeholder": "timm==1.0.9\nalbumentations>=1.4"})}
        help_texts = {"requirements": "One pip requirement per line. Options (-r, -e, --index-url), URLs and paths are refused."}

    def __init__(self, *args, workspace, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.workspace = workspace
        self.instance.workspace = workspace
        if user is not None and not self.instance.pk:
            self.instance.created_by = user

    def clean_name(self):
        name = self.cleaned_data["name"].strip()
        if not name:
            raise ValidationError("Name the environment.")
        if Environment.objects.filter(workspace=self.workspace, name=name).exclude(pk=self.instance.pk).exists():
            raise ValidationError(f"There is already an environment called {name} in this workspace.")
        return name

    def clean_requirements(self):
        text = self.cleaned_data["requirements"]
        Environment.parse_requirements(text)  # raises with one message per bad line
        return text
