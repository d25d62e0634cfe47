"""What every JSON API view shares: token auth, JSON bodies, JSON errors.

Browser sessions never authenticate the API (cookies are ignored, so CSRF
cannot reach it) and API tokens never authenticate pages. Errors are
`{"error": {"code": ..., "message": ...}}` with the matching status.
"""

import functools
import json

from django.http import JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from tracker.models import TERMINAL_STATUSES, ApiToken, Membership, Role, Run, Workspace


class ApiError(Exception):
    def __init__(self, status, code, message, details=None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


def not_found(what="object"):
    return ApiError(404, "not_found", f"{what} not found")


def error_response(status, code, message, details=None):
    body = {"error": {"code": code, "message": message}}
    if details is not None:
        body["error"]["details"] = details
    return JsonResponse(body, status=status)


def json_response(data, status=200):
    return JsonResponse(data, status=status, safe=not isinstance(data, list), json_dumps_params={"allow_nan": False})


def bearer_token(request):
    header = request.headers.get("Authorization", "")
    scheme, _, raw = header.partition(" ")
    if scheme.lower() != "bearer" or not raw.strip():
        return None
    return raw.strip()


def authenticate(request):
    """Sets request.api_token / request.api_user from the bearer token or raises 401."""
    raw = bearer_token(request)
    if raw is None:
        raise ApiError(401, "unauthenticated", "an API token is required: Authorization: Bearer <token>")
    token = ApiToken.objects.authenticate(raw)
    if token is None:
        raise ApiError(401, "invalid_token", "the API token is unknown, revoked or expired")
    if token.is_run_token and token.run.status in TERMINAL_STATUSES:
        raise ApiError(401, "run_ended", "this run token's run has ended")
    if not token.user.is_active:
        raise ApiError(401, "invalid_token", "the token's user is inactive")
    token.touch()
    request.api_token = token
    request.api_user = token.user
    # Pages use request.user; the API never uses the session user.
    request.user = token.user


def has_nul(value):
    """True if a NUL character is anywhere in a parsed JSON value (keys included)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(has_nul(k) or has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_nul(item) for item in value)
    return False


def body_has_nul(body, data):
    """NUL can only arrive in JSON as the escape \\u0000: a byte search first, a full walk only then.

    PostgreSQL refuses NUL in text, so such a value must be a 400, not a 500 at the INSERT.
    """
    return b"\\u0000" in body and has_nul(data)


def parse_json_body(request):
    content_type = request.content_type or ""
    if content_type != "application/json":
        # Check the type before touching request.body: a form body may already have
        # been parsed (request.POST), after which reading the raw body raises.
        if content_type in ("", "text/plain") and not request.META.get("CONTENT_LENGTH", "0").strip("0"):
            return {}
        raise ApiError(415, "unsupported_media_type", "request bodies must be JSON (Content-Type: application/json)")
    if not request.body:
        return {}
    try:
        data = json.loads(request.body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    if body_has_nul(request.body, data):
        raise ApiError(400, "invalid_json", "strings may not contain NUL characters (\\u0000)")
    return data


def api_endpoint(methods=("GET",), json_body=True):
    """Decorate a JSON API view: method check, token auth, JSON body in request.json, errors as JSON.

    With json_body=False the view reads the raw body itself (file uploads).
    """

    def decorate(view):
        @csrf_exempt
        @functools.wraps(view)
        def wrapper(request, *args, **kwargs):
            try:
                if request.method not in methods:
                    response = error_response(405, "method_not_allowed", f"{request.method} is not allowed here")
                    response["Allow"] = ", ".join(methods)
                    return response
                authenticate(request)
                if json_body and request.method in ("POST", "PUT", "PATCH"):
                    request.json = parse_json_body(request)
                return view(request, *args, **kwargs)
            except ApiError as exc:
                return error_response(exc.status, exc.code, exc.message, exc.details)

        wrapper.api_endpoint = True  # the route inventory test knows these answer 401 JSON
        return wrapper

    return decorate


def _check_role(request, workspace, min_role):
    membership = Membership.objects.filter(workspace=workspace, user=request.api_user).first()
    if membership is None:
        raise not_found()
    if not membership.allows(min_role):
        raise ApiError(403, "permission_denied", f"this needs the {min_role} role in the workspace")
    return membership


def api_get_workspace(request, slug=None, min_role=Role.READER):
    """The workspace named by slug (or the user's first one); run tokens reach only their run's."""
    token = request.api_token
    if token.is_run_token:
        workspace = token.run.experiment.workspace
        if slug and slug != workspace.slug:
            raise not_found("workspace")
        return workspace
    qs = Workspace.objects.for_user(request.api_user)
    workspace = qs.filter(slug=slug).first() if slug else qs.order_by("pk").first()
    if workspace is None:
        raise not_found("workspace")
    _check_role(request, workspace, min_role)
    return workspace


def api_get_run(request, run_id, min_role=Role.READER):
    """A run the token may reach; 404 for another workspace's run or another run's token."""
    token = request.api_token
    if token.is_run_token and str(token.run_id) != str(run_id):
        raise not_found("run")
    try:
        run = Run.objects.select_related("experiment__workspace").filter(pk=run_id).first()
    except (ValueError, TypeError):
        run = None
    if run is None:
        raise not_found("run")
    if not token.is_run_token:
        _check_role(request, run.experiment.workspace, min_role)
    return run


def require_live_run(run):
    if run.status in TERMINAL_STATUSES:
        raise ApiError(409, "run_ended", f"run {run.id} has ended ({run.status}); it takes no more writes")


def now_iso():
    return timezone.now().isoformat()
