from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from tracker.access import get_workspace_for_user


@login_required
def model_list(request, slug):
    workspace = get_workspace_for_user(request.user, slug)
    return render(request, "registry/model_list.html", {"workspace": workspace})
