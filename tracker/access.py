"""The one way views reach workspace-owned objects.

A non-member gets 404 (no existence leak); a member whose role is too low
for a change gets 403.
"""

from django.core.exceptions import PermissionDenied
from django.http import Http404

from tracker.models import Experiment, Membership, Role, Run, Workspace


def require_role(user, workspace, min_role=Role.READER):
    """The user's Membership of `workspace` if it allows `min_role`; Http404/PermissionDenied otherwise."""
    if not user.is_authenticated:
        raise Http404
    membership = Membership.objects.filter(workspace=workspace, user=user).first()
    if membership is None:
        raise Http404
    if not membership.allows(min_role):
        raise PermissionDenied(f"This needs the {min_role} role in {workspace.name}.")
    return membership


def get_workspace_for_user(user, slug, min_role=Role.READER):
    workspace = Workspace.objects.filter(slug=slug).first()
    if workspace is None:
        raise Http404
    require_role(user, workspace, min_role)
    return workspace


def get_experiment_for_user(user, pk, min_role=Role.READER):
    experiment = Experiment.objects.select_related("workspace").filter(pk=pk).first()
    if experiment is None:
        raise Http404
    require_role(user, experiment.workspace, min_role)
    return experiment


def get_run_for_user(user, run_id, min_role=Role.READER):
    try:
        run = Run.objects.select_related("experiment__workspace", "created_by", "parent_run").filter(pk=run_id).first()
    except (ValueError, TypeError):  # not a UUID
        run = None
    if run is None:
        raise Http404
    require_role(user, run.experiment.workspace, min_role)
    return run


def default_workspace_for(user):
    """The first workspace the user belongs to, or None."""
    return Workspace.objects.for_user(user).order_by("pk").first()
