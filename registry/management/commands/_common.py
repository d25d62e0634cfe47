from django.core.management.base import CommandError

from registry.models import RegisteredModel
from tracker.models import Workspace


def find_model(name, workspace_slug=None):
    models = RegisteredModel.objects.select_related("workspace").filter(name=name)
    if workspace_slug:
        if not Workspace.objects.filter(slug=workspace_slug).exists():
            raise CommandError(f"no workspace {workspace_slug!r}")
        models = models.filter(workspace__slug=workspace_slug)
    found = list(models[:2])
    if not found:
        raise CommandError(f"no registered model named {name!r}" + (f" in {workspace_slug}" if workspace_slug else ""))
    if len(found) > 1:
        raise CommandError(f"several workspaces have a model named {name!r}: pass --workspace SLUG")
    return found[0]
