"""Personal API tokens page (owned by the tracking data path)."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import render


@login_required
def token_list(request):
    return render(request, "tracker/tokens.html", {"tokens": request.user.api_tokens.filter(run__isnull=True)})
