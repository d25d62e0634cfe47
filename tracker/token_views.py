"""Personal API tokens page: list, create (the secret is shown once), revoke.

POSTs to the same URL carry `action=create|revoke`. Tokens are stored hashed
(tracker.models.ApiToken); run tokens are minted for jobs and not listed here.
"""

from datetime import timedelta

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache

from tracker.models import ApiToken

MAX_TOKEN_NAME = 100
EXPIRY_CHOICES = {"": None, "30": 30, "90": 90, "365": 365}


def _page(request, **extra):
    tokens = request.user.api_tokens.filter(run__isnull=True).order_by("-created_at")
    status = extra.pop("status", 200)
    context = {"tokens": tokens, "now": timezone.now(), **extra}
    return render(request, "tracker/tokens.html", context, status=status)


@never_cache
@login_required
def token_list(request):
    if request.method == "GET":
        return _page(request)
    if request.method != "POST":
        return redirect("tracker:token-list")
    action = request.POST.get("action")
    if action == "create":
        name = request.POST.get("name", "").strip()
        expiry = request.POST.get("expires_in_days", "")
        if not name or len(name) > MAX_TOKEN_NAME:
            return _page(request, error=f"Give the token a name of 1 to {MAX_TOKEN_NAME} characters.", status=400)
        if expiry not in EXPIRY_CHOICES:
            return _page(request, error="Choose an expiry from the list.", status=400)
        days = EXPIRY_CHOICES[expiry]
        expires_at = timezone.now() + timedelta(days=days) if days else None
        token, raw = ApiToken.mint(request.user, name, expires_at=expires_at)
        # Shown once, in this response only: the database keeps the hash.
        return _page(request, new_token=token, new_secret=raw)
    if action == "revoke":
        token = request.user.api_tokens.filter(run__isnull=True, pk=request.POST.get("token_id") or 0).first()
        if token is None:
            return _page(request, error="That token does not exist.", status=404)
        if token.revoked_at is None:
            token.revoke()
        messages.success(request, f"Token “{token.name}” revoked.")
        return redirect("tracker:token-list")
    return _page(request, error="Unknown action.", status=400)
