"""Registry panels other apps' pages include (owned by the registry app)."""

from django import template

from registry.forms import TRUST_LABEL
from registry.models import Flavour, InputDtype, ModelVersion
from registry.services import suggested_flavour

register = template.Library()


def _output_choices(run):
    """The run's files under outputs/ and every folder prefix above them, as (path, label) pairs."""
    paths = list(run.artifacts.filter(path__startswith="outputs/").values_list("path", flat=True))
    folders = set()
    for p in paths:
        parts = p.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            folders.add("/".join(parts[:i]) + "/")
    choices = [(f, f"{f} (folder)") for f in sorted(folders)] + [(p, p) for p in sorted(paths)]
    weights = [p for p in paths if p.lower().endswith((".pt", ".pth", ".onnx", ".safetensors", ".pt2"))]
    # outputs/model.pt over checkpoint.pt or model_full.pt (a full pickle)
    weights.sort(key=lambda p: (p.rsplit("/", 1)[-1].lower().split(".")[0] != "model", "full" in p.lower(), p))
    preferred = weights[0] if weights else None
    return choices, preferred


@register.inclusion_tag("registry/_run_panel.html", takes_context=True)
def run_register_panel(context, run):
    """"Register model" from this run's outputs."""
    request = context.get("request")
    user = getattr(request, "user", None)
    role = run.experiment.workspace.role_of(user) if user is not None else None
    choices, preferred = _output_choices(run)
    versions = list(ModelVersion.objects.filter(run=run).select_related("model").order_by("-created_at")[:10])
    return {
        "run": run, "choices": choices, "preferred": preferred,
        "flavour": suggested_flavour(preferred or ""), "flavours": Flavour.choices, "dtypes": InputDtype.choices,
        "can_register": role in ("contributor", "owner"), "versions": versions, "trust_label": TRUST_LABEL,
        "csrf_token": context.get("csrf_token"), "request": request,
    }


@register.inclusion_tag("registry/_recent_models.html")
def recent_models(workspace):
    """The workspace's recently registered model versions, for the home page."""
    versions = list(
        ModelVersion.objects.filter(model__workspace=workspace)
        .select_related("model", "run")
        .prefetch_related("aliases")
        .order_by("-created_at")[:8]
    )
    return {"workspace": workspace, "versions": versions}


@register.filter
def sig(value, digits=3):
    """A number with `digits` significant digits (1.2e-07, 0.0345, 12.3); '' for None."""
    if value is None or value == "":
        return ""
    try:
        return f"{float(value):.{int(digits)}g}"
    except (TypeError, ValueError):
        return str(value)
