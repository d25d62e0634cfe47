from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render

from tracker.access import default_workspace_for, get_workspace_for_user


@login_required
def home(request):
    workspace = default_workspace_for(request.user)
    if workspace is None:
        return render(request, "tracker/no_workspace.html")
    return redirect("tracker:workspace-home", slug=workspace.slug)


@login_required
def workspace_home(request, slug):
    workspace = get_workspace_for_user(request.user, slug)
    return render(request, "tracker/workspace_home.html", {"workspace": workspace})


def page_not_found(request, exception=None):
    return render(request, "404.html", status=404)
