"""First-start set-up: an admin user (never a fixed password) and a default workspace."""

import os
import secrets

from django.contrib.auth import get_user_model
from django.db import transaction

from tracker.models import Role, Workspace

DEFAULT_WORKSPACE_SLUG = "default"


@transaction.atomic
def ensure_admin_user():
    """Create `admin` if no superuser exists. Returns the generated password, or None."""
    User = get_user_model()
    if User.objects.filter(is_superuser=True).exists():
        return None
    password = os.environ.get("TORCHLIGHT_ADMIN_PASSWORD")
    generated = None
    if not password:
        password = generated = secrets.token_urlsafe(12)
    User.objects.create_superuser("admin", email="", password=password)
    return generated


@transaction.atomic
def ensure_default_workspace():
    """The default workspace, with every superuser as owner."""
    workspace, _ = Workspace.objects.get_or_create(slug=DEFAULT_WORKSPACE_SLUG, defaults={"name": "Default"})
    for user in get_user_model().objects.filter(is_superuser=True):
        if not workspace.memberships.filter(user=user).exists():
            workspace.add_member(user, Role.OWNER)
    return workspace


@transaction.atomic
def ensure_local_cluster(workspace):
    """The `local` cluster (0 to 2 CPU nodes on this machine) of the workspace, if it has no cluster yet."""
    import os

    from jobs.models import ClusterKind, ComputeCluster

    existing = ComputeCluster.objects.filter(workspace=workspace).first()
    if existing is not None:
        return existing, False
    cpus = os.cpu_count() or 1
    cluster = ComputeCluster.objects.create(
        workspace=workspace, name="local", kind=ClusterKind.LOCAL, vm_size=f"this machine ({cpus} CPUs)",
        cpus_per_node=cpus, gpus_per_node=0, min_nodes=0, max_nodes=2, idle_seconds_before_scaledown=300,
    )
    return cluster, True
