from tracker.models import Workspace


def workspaces(request):
    """The signed-in user's workspaces, for the navigation's workspace switcher."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"user_workspaces": []}
    return {"user_workspaces": Workspace.objects.for_user(user).only("name", "slug")}
