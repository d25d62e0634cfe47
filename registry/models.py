"""Model registry: registered models, immutable versions, their files, aliases, ONNX exports.

A ModelVersion is immutable once created: its files, flavour, architecture,
signature and lineage never change (only `description` and `tags` may be
edited). New content is a new version; versions count up from 1 per model.
"""

import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from tracker.models import Workspace

MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\- ]{0,199}$")
ALIAS_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,62}$")


def validate_model_name(name):
    if not MODEL_NAME_RE.match(name or "") or name != name.strip():
        raise ValidationError(
            "A model name is 1–200 characters: letters, digits, '.', '_', '-' and spaces, starting with a letter or digit."
        )


def validate_alias_name(name):
    if not ALIAS_RE.match(name or ""):
        raise ValidationError("An alias is 1–63 characters: letters, digits, '_' and '-', starting with a letter.")
    if re.fullmatch(r"v\d+|latest", name, flags=re.IGNORECASE):
        raise ValidationError(f"'{name}' is reserved (it names a version).")


class Flavour(models.TextChoices):
    STATE_DICT = "state_dict", "state_dict + architecture"
    TORCHSCRIPT = "torchscript", "TorchScript"
    TORCH_EXPORT = "torch_export", "torch.export program"
    FULL_PICKLE = "full_pickle", "full pickle (runs code when loaded)"
    ONNX = "onnx", "ONNX"
    SAFETENSORS = "safetensors", "safetensors + architecture"


class Framework(models.TextChoices):
    PYTORCH = "pytorch", "PyTorch"
    ONNX = "onnx", "ONNX"


class InputDtype(models.TextChoices):
    FLOAT32 = "float32", "float32"
    FLOAT16 = "float16", "float16"
    FLOAT64 = "float64", "float64"
    INT64 = "int64", "int64"
    INT32 = "int32", "int32"
    UINT8 = "uint8", "uint8"


class RegisteredModelQuerySet(models.QuerySet):
    def for_workspace(self, workspace):
        return self.filter(workspace=workspace)

    def with_latest_version(self):
        latest = ModelVersion.objects.filter(model=models.OuterRef("pk")).order_by("-version")
        return self.annotate(
            latest_version_number=models.Subquery(latest.values("version")[:1]),
            latest_version_at=models.Subquery(latest.values("created_at")[:1]),
            version_count=models.Count("versions", distinct=True),
        )


class RegisteredModel(models.Model):
    """A named model in a workspace; holds numbered, immutable versions and aliases."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="registered_models")
    name = models.CharField(max_length=200, validators=[validate_model_name])
    description = models.TextField(blank=True)
    tags = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    objects = RegisteredModelQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["workspace", "name"], name="unique_model_name_per_workspace")]

    def __str__(self):
        return self.name

    def next_version_number(self):
        """The next version number; call inside a transaction holding this row locked."""
        last = self.versions.aggregate(last=models.Max("version"))["last"]
        return (last or 0) + 1

    def latest_version(self):
        return self.versions.order_by("-version").first()

    def alias_names(self):
        return [a.name for a in self.aliases.all()]


class ImmutableVersionError(Exception):
    """A content field of an existing ModelVersion was about to change."""


class ModelVersion(models.Model):
    """One immutable version of a registered model: files, flavour, signature, lineage."""

    EDITABLE_FIELDS = frozenset({"description", "tags"})

    model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    flavour = models.CharField(max_length=20, choices=Flavour.choices)
    framework = models.CharField(max_length=20, choices=Framework.choices, default=Framework.PYTORCH)
    framework_version = models.CharField(max_length=50, blank=True)
    architecture = models.CharField(max_length=300, blank=True, help_text='"torchvision:resnet18" or "module:Class"')
    arch_kwargs = models.JSONField(default=dict, blank=True)
    input_shape = models.JSONField(null=True, blank=True, help_text="First dimension is the (dynamic) batch.")
    input_dtype = models.CharField(max_length=10, choices=InputDtype.choices, default=InputDtype.FLOAT32)
    output_shape = models.JSONField(null=True, blank=True)
    description = models.TextField(blank=True)
    tags = models.JSONField(default=dict, blank=True)
    trusted = models.BooleanField(default=False, help_text="A full pickle the registering user trusted to run code.")
    run = models.ForeignKey("tracker.Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="model_versions")
    source_version = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="derived_versions")
    parity = models.JSONField(null=True, blank=True, help_text="ONNX parity report: max abs/rel difference, input, tolerance.")
    total_size = models.BigIntegerField(default=0)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["model", "-version"]
        constraints = [models.UniqueConstraint(fields=["model", "version"], name="unique_version_per_model")]

    def __str__(self):
        return f"{self.model.name} v{self.version}"

    @classmethod
    def from_db(cls, db, field_names, values):
        instance = super().from_db(db, field_names, values)
        instance._loaded = dict(zip(field_names, values, strict=True))
        return instance

    def _content_snapshot(self):
        return {f.attname: getattr(self, f.attname) for f in self._meta.concrete_fields if f.name not in self.EDITABLE_FIELDS}

    def save(self, *args, **kwargs):
        if not self._state.adding:
            update_fields = kwargs.get("update_fields")
            if update_fields is not None:
                locked = set(update_fields) - self.EDITABLE_FIELDS
                if locked:
                    raise ImmutableVersionError(f"model versions are immutable: cannot change {', '.join(sorted(locked))}")
            else:
                loaded = getattr(self, "_loaded", None)
                current = self._content_snapshot()
                changed = [k for k, v in current.items() if loaded is None or k not in loaded or loaded[k] != v]
                if changed:
                    raise ImmutableVersionError(f"model versions are immutable: cannot change {', '.join(sorted(changed))}")
                kwargs["update_fields"] = sorted(self.EDITABLE_FIELDS)
        super().save(*args, **kwargs)
        self._loaded = {f.attname: getattr(self, f.attname) for f in self._meta.concrete_fields}

    @property
    def label(self):
        return f"v{self.version}"

    @property
    def is_onnx(self):
        return self.flavour == Flavour.ONNX

    @property
    def can_export_onnx(self):
        if self.flavour == Flavour.ONNX:
            return False
        if self.flavour in (Flavour.STATE_DICT, Flavour.SAFETENSORS) and not self.architecture:
            return False
        if self.flavour == Flavour.FULL_PICKLE and not self.trusted:
            return False
        return bool(self.input_shape)

    @property
    def export_blocker(self):
        """Why this version cannot be exported to ONNX, or ''."""
        if self.flavour == Flavour.ONNX:
            return "This version already is ONNX."
        if self.flavour in (Flavour.STATE_DICT, Flavour.SAFETENSORS) and not self.architecture:
            return "A state dict needs an architecture to be exported; register a new version with one."
        if self.flavour == Flavour.FULL_PICKLE and not self.trusted:
            return "An untrusted full pickle is never loaded."
        if not self.input_shape:
            return "The version has no input signature; register a new version with an input shape."
        return ""

    @property
    def signature_text(self):
        if not self.input_shape:
            return ""
        dims = ["batch"] + [str(d) for d in self.input_shape[1:]]
        return f"({', '.join(dims)}) {self.input_dtype}"

    def spec(self):
        """What a loader subprocess needs to rebuild this version (JSON-serialisable)."""
        return {
            "flavour": self.flavour,
            "architecture": self.architecture,
            "arch_kwargs": self.arch_kwargs or {},
            "input_shape": self.input_shape,
            "input_dtype": self.input_dtype,
            "trusted": self.trusted,
            "files": [f.path for f in self.files.all()],
        }


class ModelFile(models.Model):
    """One file of a version, copied into registry storage under a server-generated key."""

    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="files")
    path = models.CharField(max_length=1024)
    size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)
    storage_key = models.CharField(max_length=200, unique=True, editable=False)

    class Meta:
        ordering = ["path"]
        constraints = [models.UniqueConstraint(fields=["version", "path"], name="unique_file_path_per_version")]

    def __str__(self):
        return self.path

    @property
    def name(self):
        return self.path.rsplit("/", 1)[-1]


class ModelAlias(models.Model):
    """A movable name (production, staging, …) pointing at one version of a model."""

    model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE, related_name="aliases")
    name = models.CharField(max_length=63, validators=[validate_alias_name])
    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="aliases")
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["model", "name"], name="unique_alias_per_model")]

    def __str__(self):
        return f"{self.name} → v{self.version.version}"


class AliasEvent(models.Model):
    """History of an alias: set, moved or deleted, by whom and when."""

    model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE, related_name="alias_events")
    alias = models.CharField(max_length=63)
    from_version = models.PositiveIntegerField(null=True, blank=True)
    to_version = models.PositiveIntegerField(null=True, blank=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-at", "-pk"]

    def __str__(self):
        return f"{self.alias}: {self.from_version} → {self.to_version}"

    @property
    def action(self):
        if self.from_version is None:
            return "set"
        if self.to_version is None:
            return "deleted"
        return "moved"


class TaskStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"


class WorkerTask(models.Model):
    """What an ONNX export and a "try it" request share: a claimed, self-reporting worker job."""

    status = models.CharField(max_length=20, choices=TaskStatus.choices, default=TaskStatus.QUEUED, db_index=True)
    cluster = models.ForeignKey("jobs.ComputeCluster", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    message = models.TextField(blank=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True

    @property
    def is_terminal(self):
        return self.status in (TaskStatus.COMPLETED, TaskStatus.FAILED)

    def claim(self):
        """Queued → Running with a conditional update; False if someone else has it or it is done."""
        now = timezone.now()
        claimed = type(self).objects.filter(pk=self.pk, status=TaskStatus.QUEUED).update(
            status=TaskStatus.RUNNING, started_at=now
        )
        if claimed:
            self.status, self.started_at = TaskStatus.RUNNING, now
        return bool(claimed)

    def _finish(self, status, message, **fields):
        now = timezone.now()
        done = type(self).objects.filter(pk=self.pk, status__in=[TaskStatus.QUEUED, TaskStatus.RUNNING]).update(
            status=status, message=message, finished_at=now, **fields
        )
        if done:
            self.status, self.message, self.finished_at = status, message, now
            for key, value in fields.items():
                setattr(self, key, value)
        return bool(done)

    def fail(self, message, **fields):
        return self._finish(TaskStatus.FAILED, message, **fields)

    def complete(self, message="", **fields):
        return self._finish(TaskStatus.COMPLETED, message, **fields)


class OnnxExport(WorkerTask):
    """An ONNX export of one version, run as an RQ job on a cluster's worker."""

    source_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="onnx_exports")
    opset = models.PositiveIntegerField(default=18)
    log = models.TextField(blank=True)
    progress = models.FloatField(default=0.0)
    stage = models.CharField(max_length=100, blank=True)
    result_version = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self):
        return f"ONNX export of {self.source_version} ({self.status})"

    def report_progress(self, fraction, stage, log_line=None):
        self.progress = max(0.0, min(1.0, fraction))
        self.stage = stage[:100]
        fields = ["progress", "stage"]
        if log_line is not None:
            self.log = (self.log + log_line + "\n")[-200_000:]
            fields.append("log")
        OnnxExport.objects.filter(pk=self.pk, status=TaskStatus.RUNNING).update(**{f: getattr(self, f) for f in fields})


class InferenceRequest(WorkerTask):
    """A "try it" prediction: an uploaded JSON tensor or image, run through a version on a worker."""

    class InputKind(models.TextChoices):
        JSON = "json", "JSON tensor"
        IMAGE = "image", "image"

    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="inference_requests")
    input_kind = models.CharField(max_length=10, choices=InputKind.choices)
    input_key = models.CharField(max_length=200, blank=True, editable=False)
    input_name = models.CharField(max_length=255, blank=True)
    result = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self):
        return f"try {self.version} ({self.status})"


def _refuse_file_update(sender, instance, **kwargs):
    if not instance._state.adding:
        raise ImmutableVersionError("model files are immutable once stored")


models.signals.pre_save.connect(_refuse_file_update, sender=ModelFile)
