"""What every MLflow endpoint shares: bearer-token auth, the target workspace, request parameters, errors.

The client's `MLFLOW_TRACKING_TOKEN` is a Torchlight API token (also
accepted as the password of HTTP Basic auth, for `MLFLOW_TRACKING_PASSWORD`).
Browser sessions never authenticate here. Objects land in the token owner's
first workspace, or the one named by TORCHLIGHT_MLFLOW_WORKSPACE; objects of
the user's other workspaces are reachable by id. A non-member gets
RESOURCE_DOES_NOT_EXIST (404), a reader who writes PERMISSION_DENIED (403).
"""

import base64
import binascii
import functools
import json
import logging
import math
import threading
import time

from django.db import DatabaseError
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from tracker.api.base import body_has_nul
from tracker.mlflow_compat import conf
from tracker.mlflow_compat.errors import MlflowError, denied, error_response, invalid, not_found
from tracker.models import ROLE_RANK, TERMINAL_STATUSES, ApiToken, Membership, Role, Workspace, hash_token

logger = logging.getLogger("torchlight.mlflow")


class Context:
    """Who is calling (user, token) and the workspace new objects land in (looked up when first needed)."""

    def __init__(self, token, roles):
        self.token = token
        self.user = token.user
        self.roles = roles  # {workspace_id: role}
        self._workspace = None

    @property
    def workspace(self):
        if self._workspace is None:
            self._workspace = _target_workspace(self.token, self.roles)
        return self._workspace

    @property
    def run_token(self):
        return self.token.run if self.token.is_run_token else None

    def check(self, workspace_id, write=False):
        """Membership check for an object of workspace `workspace_id`: 404 for non-members, 403 for readers writing."""
        role = self.roles.get(workspace_id)
        if role is None:
            raise not_found("not found")
        if write and ROLE_RANK[role] < ROLE_RANK[Role.CONTRIBUTOR]:
            raise denied("this needs the contributor role in the workspace")
        return role

    def check_run(self, run, workspace_id, write=False):
        token_run = self.run_token
        if token_run is not None and token_run.pk != run.pk:
            raise not_found(f"Run '{run.id.hex}' not found")
        try:
            self.check(workspace_id, write)
        except MlflowError as exc:
            if exc.status == 404:
                raise not_found(f"Run '{run.id.hex}' not found") from None
            raise

    def require_personal(self, action):
        if self.run_token is not None:
            raise denied(f"a run token cannot {action}; use a personal API token")


def _raw_token(request):
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if not value:
        return None
    if scheme.lower() == "bearer":
        return value
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return None


# A few seconds of memory per token: a burst of log_metric calls costs one token lookup, not one per
# call. A revoked token or a changed role takes effect within AUTH_CACHE_SECONDS.
AUTH_CACHE_SECONDS = 2.0
_auth_cache = {}
_auth_lock = threading.Lock()


def _lookup(raw):
    digest = hash_token(raw)
    now = time.monotonic()
    hit = _auth_cache.get(digest)
    if hit is not None and now - hit[0] < AUTH_CACHE_SECONDS:
        token, roles = hit[1], hit[2]
        if not (token.expires_at and token.expires_at <= timezone.now()):
            return token, roles
    token = ApiToken.objects.authenticate(raw)
    if token is None or not token.user.is_active:
        return None, None
    if token.is_run_token and token.run.status in TERMINAL_STATUSES:
        raise MlflowError("UNAUTHENTICATED", "this run token's run has ended")
    token.touch()
    roles = dict(Membership.objects.filter(user=token.user).values_list("workspace_id", "role"))
    with _auth_lock:
        if len(_auth_cache) > 10_000:
            _auth_cache.clear()
        _auth_cache[digest] = (now, token, roles)
    return token, roles


def authenticate(request):
    raw = _raw_token(request)
    if raw is None:
        raise MlflowError(
            "UNAUTHENTICATED", "an API token is required: set MLFLOW_TRACKING_TOKEN to a Torchlight API token"
        )
    if len(raw) > 200:
        raise MlflowError("UNAUTHENTICATED", "the API token is unknown, revoked or expired")
    token, roles = _lookup(raw)
    if token is None:
        raise MlflowError("UNAUTHENTICATED", "the API token is unknown, revoked or expired")
    request.user = token.user
    return Context(token, roles)


def _target_workspace(token, roles):
    if token.is_run_token:
        return Workspace.objects.get(experiments__runs=token.run_id)
    slug = conf.workspace_slug()
    if slug:
        workspace = Workspace.objects.filter(slug=slug, pk__in=list(roles)).first()
        if workspace is None:
            raise not_found(f"workspace {slug!r} ({conf.WORKSPACE_ENV}) not found")
        return workspace
    workspace = Workspace.objects.filter(pk__in=list(roles)).order_by("pk").first()
    if workspace is None:
        raise not_found("the token's user belongs to no workspace")
    return workspace


def clear_auth_cache():
    with _auth_lock:
        _auth_cache.clear()


class Params:
    """Request parameters: the JSON body (POST/PATCH/DELETE) or the query string (GET)."""

    def __init__(self, data, query=None):
        self.data = data
        self.query = query

    def raw(self, name, default=None):
        if self.query is not None:
            values = self.query.getlist(name)
            if not values:
                return default
            return values[0] if len(values) == 1 else values
        return self.data.get(name, default)

    def str(self, name, required=False, default=""):
        value = self.raw(name)
        if value is None or value == "":
            if required:
                raise invalid(f"Missing value for required parameter '{name}'.")
            return default
        if isinstance(value, list):
            raise invalid(f"parameter '{name}' must be a single string")
        if not isinstance(value, str):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return str(value)
            raise invalid(f"parameter '{name}' must be a string, got {type(value).__name__}")
        return value

    def int(self, name, default=None, minimum=None, maximum=None):
        value = self.raw(name)
        if value is None or value == "":
            return default
        parsed = to_int(value, name)
        if minimum is not None and parsed < minimum:
            raise invalid(f"parameter '{name}' must be at least {minimum}, got {parsed}")
        if maximum is not None and parsed > maximum:
            raise invalid(f"parameter '{name}' must be at most {maximum}, got {parsed}")
        return parsed

    def list(self, name):
        if self.query is not None:
            return self.query.getlist(name)
        value = self.data.get(name) or []
        if not isinstance(value, list):
            raise invalid(f"parameter '{name}' must be a list")
        return value


def to_int(value, name):
    """An int from a JSON number or string (protobuf JSON writes int64 as strings)."""
    if isinstance(value, bool):
        raise invalid(f"parameter '{name}' must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise invalid(f"parameter '{name}' must be an integer, got {value!r}")


def _parse_body(request):
    if not request.body:
        return {}
    try:
        data = json.loads(request.body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MlflowError("BAD_REQUEST", f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MlflowError("BAD_REQUEST", "the body must be a JSON object")
    if body_has_nul(request.body, data):
        raise MlflowError("INVALID_PARAMETER_VALUE", "strings may not contain NUL characters (\\u0000)")
    return data


def mlflow_endpoint(methods=("GET",), json_body=True):
    """Decorate an MLflow view: method check, token auth (request.mlflow), params (request.params), MLflow errors."""

    def decorate(view):
        @csrf_exempt
        @functools.wraps(view)
        def wrapper(request, *args, **kwargs):
            try:
                if request.method not in methods:
                    raise MlflowError(
                        "ENDPOINT_NOT_FOUND", f"{request.method} is not supported on {request.path}", status=405
                    )
                request.mlflow = authenticate(request)
                if json_body:
                    if request.method == "GET":
                        request.params = Params({}, request.GET)
                    else:
                        request.params = Params(_parse_body(request))
                return view(request, *args, **kwargs)
            except MlflowError as exc:
                return error_response(exc)
            except DatabaseError:
                # A locked or unavailable database is the server's problem: the client may retry.
                logger.exception("database error in %s", request.path)
                return error_response(MlflowError("TEMPORARILY_UNAVAILABLE", "the database is busy; retry", 503))

        wrapper.api_endpoint = True  # the route inventory test knows these answer 401 JSON
        return wrapper

    return decorate
