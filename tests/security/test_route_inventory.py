"""Every URL pattern is guarded: walk the resolver, check each route against its POLICY.

Adding a route? Add it to POLICY (named routes) or PREFIX_POLICY (unnamed
routes under a known prefix) with its kind:

  page       GET page for signed-in members            anon → 302 login; outsider → 404; token alone → 302
  page-form  GET form + POST change (min_role to POST)  as page, plus reader POST → 403/404, CSRF enforced
  page-post  POST-only change                           GET → 405; anon → 302; outsider → 404; reader → 403/404; CSRF
  api        JSON read (Bearer token)                   anon → 401 JSON; session cookie alone → 401; outsider → 404
  api-write  JSON write (methods listed)                as api, plus reader → 403/404 and non-JSON body → 415
  mlflow     MLflow-compatible API                      anon → 401 JSON; session cookie alone → 401
  public     no sign-in needed                          anon → < 400
  admin      Django admin                               anon → 302 to login

`args` names the objects the URL kwargs take (attributes of World); `scoped`
says the URL names an object of the member's workspace (so an outsider gets 404).
"""

import json
import re
from dataclasses import dataclass, field

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from tracker.models import ApiToken, Role

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)
CHECKED_KINDS = {"page", "page-form", "page-post", "api", "api-write", "mlflow", "public", "admin"}


@dataclass(frozen=True)
class Route:
    kind: str
    args: dict = field(default_factory=dict)
    scoped: bool = True
    min_role: str = Role.CONTRIBUTOR  # for changes
    methods: tuple = ()  # api-write: the writing methods; api: extra methods besides GET
    reads: bool = True  # api-write: also answers GET
    json_body: bool = True  # api-write: False for raw uploads (no 415 check)
    member_ok: bool = True  # GET by the owner must succeed (proves the URL reaches the view)
    query: str = ""  # appended to the URL (World attributes in {braces})
    body: tuple = ()  # api-write: JSON body fields naming the target, as (field, World attribute) pairs


def page(member_ok=True, query="", **args):
    return Route("page", args, member_ok=member_ok, query=query)


def page_form(min_role=Role.CONTRIBUTOR, scoped=True, **args):
    return Route("page-form", args, scoped=scoped, min_role=min_role)


def page_post(min_role=Role.CONTRIBUTOR, **args):
    return Route("page-post", args, min_role=min_role)


def api(scoped=True, query="", **args):
    return Route("api", args, scoped=scoped, query=query)


def api_write(*methods, reads=True, json_body=True, scoped=True, min_role=Role.CONTRIBUTOR, body=(), query="", **args):
    return Route(
        "api-write", args, scoped=scoped, methods=methods, reads=reads, json_body=json_body, min_role=min_role,
        body=body, query=query,
    )


IN_WS = "?workspace={workspace.slug}"

POLICY = {
    # accounts (config/urls.py)
    "login": Route("public", scoped=False),
    "logout": Route("public", scoped=False, member_ok=False),
    "admin-login": Route("public", scoped=False),
    # tracker pages
    "tracker:home": Route("page", scoped=False),
    "tracker:workspace-home": page(),
    "tracker:experiment-list": page(),
    "tracker:experiment-create": page_form(),
    "tracker:experiment-detail": page(pk="experiment"),
    "tracker:experiment-edit": page_form(pk="experiment"),
    "tracker:experiment-archive": page_post(pk="experiment"),
    "tracker:experiment-unarchive": page_post(pk="experiment"),
    "tracker:run-detail": page(),
    "tracker:run-tag-set": page_post(),
    "tracker:run-tag-delete": page_post(),
    "tracker:run-artifacts": page(),
    "tracker:artifact-download": page(),
    "tracker:artifact-raw": page(artifact_id="image"),
    "tracker:compare": page(query="?runs={run.id},{run2.id}"),
    "tracker:metric-chart": page(),
    "tracker:metric-csv": page(),
    "tracker:token-list": page_form(min_role=Role.READER, scoped=False),
    # tracker REST API
    "api:schema": Route("public", scoped=False),
    "api:docs": Route("public", scoped=False),
    "api:whoami": api(scoped=False),
    "api:experiments": api_write(
        "POST", body=(("workspace", "workspace.slug"), ("name", "new_name")), query="?workspace={workspace.slug}"
    ),
    "api:experiment-detail": api(pk="experiment"),
    "api:runs": api_write("POST", body=(("experiment_id", "experiment.pk"),), query="?workspace={workspace.slug}"),
    "api:run-detail": api_write("PATCH", "POST"),
    "api:run-params": api_write("POST", reads=False),
    "api:run-tags": api_write("POST", reads=False),
    "api:run-progress": api_write("POST", reads=False),
    "api:run-metrics": api_write("POST"),
    "api:metric-history": api(),
    "api:metric-chart": api(),
    "api:metric-csv": api(),
    "api:run-artifacts": api(),
    "api:artifact": api_write("PUT", json_body=False),
    # jobs REST API
    "jobs-api:jobs": api_write("POST", reads=False, body=(("workspace", "workspace.slug"),)),
    "jobs-api:job-detail": api(run_id="job_run"),
    "jobs-api:job-cancel": api_write("POST", reads=False, run_id="job_run"),
    "jobs-api:run-logs": api(),
    "jobs-api:clusters": api_write(
        "POST", min_role=Role.OWNER, body=(("workspace", "workspace.slug"),), query="?workspace={workspace.slug}"
    ),
    "jobs-api:sources": api_write(
        "POST", reads=False, json_body=False, query="?workspace={workspace.slug}&filename=train.py"
    ),
    # registry REST API (models addressed by name within ?workspace=)
    "registry-api:models": api_write("POST", body=(("name", "new_name"),), query=IN_WS),
    "registry-api:model-detail": api_write("DELETE", name="model.name", query=IN_WS),
    "registry-api:versions": api_write("POST", name="model.name", body=(("run_id", "run.id"), ("path", "artifact.path")), query=IN_WS),
    "registry-api:version-detail": api_write("DELETE", name="model.name", number="version.version", query=IN_WS),
    "registry-api:version-download": api(name="model.name", number="version.version", query=IN_WS),
    "registry-api:file-download": api(name="model.name", number="version.version", file_id="model_file", query=IN_WS),
    "registry-api:version-export": api_write("POST", reads=False, name="model.name", number="version.version", query=IN_WS),
    "registry-api:alias-detail": api_write("PUT", "DELETE", name="model.name", alias="new_name", query=IN_WS),
    "registry-api:export-detail": api(export_id="export", query=IN_WS),
    # jobs pages
    "jobs:job-new": page_form(),
    "jobs:cluster-list": page(),
    "jobs:cluster-new": page_form(min_role=Role.OWNER),
    "jobs:cluster-detail": page(pk="cluster"),
    "jobs:cluster-edit": page_form(min_role=Role.OWNER, pk="cluster"),
    "jobs:environment-list": page(),
    "jobs:environment-new": page_form(),
    "jobs:example-download": Route("page", scoped=False),
    "jobs:run-logs": page(),
    "jobs:job-cancel": page_post(),
    # registry pages
    "registry:model-list": page(),
    "registry:register-upload": page_form(),
    "registry:register-from-run": page_post(),
    "registry:model-detail": page(pk="model"),
    "registry:model-delete": page_form(min_role=Role.OWNER, pk="model"),
    "registry:alias-set": page_post(pk="model"),
    "registry:alias-delete": page_post(pk="model"),
    "registry:export-status": page(pk="model", export_id="export"),
    "registry:try-status": page(pk="model", member_ok=False),
    "registry:version-detail": page(pk="model"),
    "registry:file-download": page(pk="model", file_id="model_file"),
    "registry:version-zip": page(pk="model"),
    "registry:export-request": page_post(pk="model"),
    "registry:try-request": page_post(pk="model"),
    "registry:model-describe": page_post(pk="model"),
    "registry:version-describe": page_post(pk="model"),
}

# Unnamed routes (the MLflow-compatible API) by where they are mounted.
PREFIX_POLICY = {
    "api/2.0/mlflow/": "mlflow",
    "api/3.0/mlflow/": "mlflow",
    "ajax-api/2.0/mlflow/": "mlflow",
    "api/2.0/mlflow-artifacts/": "mlflow",
    "ajax-api/2.0/mlflow-artifacts/": "mlflow",
    "admin/": "admin",
}


def walk(patterns, prefix="", namespace=""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            inner = namespace
            if pattern.namespace:
                inner = f"{namespace}:{pattern.namespace}" if namespace else pattern.namespace
            yield from walk(pattern.url_patterns, prefix + str(pattern.pattern), inner)
        elif isinstance(pattern, URLPattern):
            name = f"{namespace}:{pattern.name}" if (namespace and pattern.name) else (pattern.name or "")
            yield name, prefix + str(pattern.pattern)


def all_routes():
    seen = {}
    for name, route in walk(get_resolver().url_patterns):
        key = name or route
        seen.setdefault(key, route)
    return seen


def policy_for(key, route):
    if key in POLICY:
        return POLICY[key]
    for prefix, kind in PREFIX_POLICY.items():
        if route.lstrip("^").startswith(prefix):
            return Route(kind, scoped=False)
    return None


ROUTES = all_routes()


def test_it_has_a_policy_for_every_route():
    missing = [f"{key}  ({route})" for key, route in ROUTES.items() if policy_for(key, route) is None]
    assert not missing, (
        "These routes have no entry in tests/security/test_route_inventory.py POLICY; add each with its kind "
        "(page, page-form, page-post, api, api-write, mlflow, public, admin) so its guard is tested:\n  "
        + "\n  ".join(missing)
    )
    stale = [name for name in POLICY if name not in ROUTES]
    assert not stale, f"POLICY names routes that no longer exist: {stale}"
    assert all(policy.kind in CHECKED_KINDS for policy in POLICY.values())


# --- building URLs -----------------------------------------------------------------------------------

CONVERTER = re.compile(r"<(?:(?P<conv>[^>:]+):)?(?P<name>\w+)>")
GROUP = re.compile(r"\(\?P<(?P<name>\w+)>(?:[^()]|\([^()]*\))*\)")


def build_url(route, values):
    def sub(match):
        return str(values.get(match.group("name"), "1"))

    url = GROUP.sub(sub, route)
    url = CONVERTER.sub(sub, url)
    url = url.replace("^", "").replace("$", "").replace("\\.", ".").replace("\\", "")
    return "/" + url


class World:
    """One workspace's objects (owned by `owner`): the things URLs point at."""

    def __init__(self, workspace, owner, experiment, run):
        import io

        from jobs.models import ComputeCluster, Job, SourceKind
        from registry.models import Flavour, ModelFile, ModelVersion, OnnxExport, RegisteredModel
        from tracker import metric_store, services, storage
        from tracker.models import Run, RunStatus

        self.workspace = workspace
        self.experiment = experiment
        self.run = run
        self.artifact = services.store_artifact(run, "outputs/model.pt", io.BytesIO(b"weights"))
        metric_store.ingest(run, [{"key": "loss", "value": 0.5, "step": 0}])
        self.image = services.store_artifact(run, "plots/curve.png", io.BytesIO(PNG))
        self.run2 = Run.objects.create(experiment=experiment, name="run-2", created_by=owner)
        self.cluster = ComputeCluster.objects.create(workspace=workspace, name="local-cpu")
        self.model = RegisteredModel.objects.create(workspace=workspace, name="digits-net", created_by=owner)
        self.version = ModelVersion.objects.create(model=self.model, version=1, flavour=Flavour.values[0], created_by=owner)
        blob = storage.save_stream(io.BytesIO(b"weights"), kind="registry")
        self.model_file = ModelFile.objects.create(
            version=self.version, path="model.pt", size=blob.size, sha256=blob.sha256, storage_key=blob.key
        )
        self.export = OnnxExport.objects.create(source_version=self.version, cluster=self.cluster, requested_by=owner)
        self.new_name = "inventory-experiment"
        self.job_run = Run.objects.create(experiment=experiment, name="job-run", created_by=owner, status=RunStatus.QUEUED)
        Job.objects.create(
            run=self.job_run, cluster=self.cluster, source_kind=SourceKind.values[0], entry_script="train.py",
            submitted_by=owner,
        )

    def attribute(self, dotted):
        value = self
        for part in dotted.split("."):
            value = getattr(value, part)
        return value

    def values(self, policy):
        values = {
            "slug": self.workspace.slug,
            "run_id": self.run.id,
            "artifact_id": self.artifact.pk,
            "key": "loss",
            "path": "outputs/model.pt",
            "name": "digits",
            "model_id": "m-0",
            "version": 1,
            "alias": "production",
            "request_id": 1,
        }
        for arg, attribute in policy.args.items():
            value = self.attribute(attribute)
            values[arg] = getattr(value, "pk", value)
        return values


@pytest.fixture
def world(workspace, owner, experiment, run):
    return World(workspace, owner, experiment, run)


def token_client(user):
    _, raw = ApiToken.mint(user, "inventory")
    return Client(HTTP_AUTHORIZATION=f"Bearer {raw}")


def session_client(user, **kwargs):
    client = Client(**kwargs)
    client.force_login(user)
    return client


def assert_login_redirect(response, url):
    assert response.status_code == 302, f"{url}: anonymous got {response.status_code}, expected a login redirect"
    assert response["Location"].startswith("/login/"), f"{url}: redirected to {response['Location']}"


def assert_json_error(response, status, url, who):
    assert response.status_code == status, f"{url}: {who} got {response.status_code}, expected {status}"
    assert response["Content-Type"].startswith("application/json"), f"{url}: {who} got a non-JSON {status}"
    body = response.json()
    assert "error" in body or "error_code" in body, f"{url}: {who}: error body {body}"


def check_page(policy, url, who):
    assert_login_redirect(Client().get(url), url)
    token_only = token_client(who["owner"]).get(url)
    assert token_only.status_code == 302, f"{url}: an API token authenticated a page ({token_only.status_code})"
    if policy.member_ok:
        status = session_client(who["owner"]).get(url).status_code
        assert status < 400, f"{url}: the owner got {status}; fix the route's args in POLICY"
    if policy.scoped:
        status = session_client(who["outsider"]).get(url).status_code
        assert status == 404, f"{url}: an outsider got {status}, expected 404"


def check_change(policy, url, who, method="post"):
    assert_login_redirect(getattr(Client(), method)(url, {}), url)
    if policy.scoped:
        status = getattr(session_client(who["outsider"]), method)(url, {}).status_code
        assert status == 404, f"{url}: an outsider's POST got {status}, expected 404"
    if policy.min_role != Role.READER:
        status = getattr(session_client(who["reader"]), method)(url, {}).status_code
        assert status in (403, 404), f"{url}: a reader's POST got {status}, expected 403"
    csrf = session_client(who["owner"], enforce_csrf_checks=True).post(url, {})
    assert csrf.status_code == 403, f"{url}: a POST without a CSRF token got {csrf.status_code}, expected 403"


def check_api(policy, url, who, method="get", body=None):
    kwargs = {"data": json.dumps(body or {}, default=str), "content_type": "application/json"} if method != "get" else {}
    assert_json_error(getattr(Client(), method)(url, **kwargs), 401, url, f"anonymous {method.upper()}")
    cookie = getattr(session_client(who["owner"]), method)(url, **kwargs)
    assert_json_error(cookie, 401, url, f"a session cookie without a token ({method.upper()})")
    if policy.scoped:
        outsider = getattr(token_client(who["outsider"]), method)(url, **kwargs)
        assert_json_error(outsider, 404, url, f"an outsider's token ({method.upper()})")


def check_mlflow(url, who):
    """Each method answers 401 JSON, or 405 JSON where the route does not take it; at least one is 401."""
    session = session_client(who["owner"])
    answered = []
    anonymous = Client()
    for method in ("get", "post", "patch", "delete", "put"):
        kwargs = {} if method == "get" else {"data": "{}", "content_type": "application/json"}
        clients = [("anonymous", anonymous)]
        if method in ("get", "post"):
            clients.append(("a session cookie without a token", session))
        for who_label, client in clients:
            response = getattr(client, method)(url, **kwargs)
            if response.status_code == 405:
                continue
            assert_json_error(response, 401, url, f"{who_label} {method.upper()}")
            answered.append(method)
    assert answered, f"{url}: no method answered 401"


def check_route(policy, url, who, body=None):
    kind = policy.kind
    if kind == "public":
        if policy.member_ok:
            status = Client().get(url).status_code
            assert status < 400, f"{url}: public route answered {status}"
    elif kind == "admin":
        response = Client().get(url)
        if response.status_code != 404:  # admin answers 404 for unknown object ids before the login check
            assert_login_redirect(response if response["Location"].startswith("/login/") else Client().get(response["Location"]), url)
    elif kind == "page":
        check_page(policy, url, who)
    elif kind == "page-form":
        check_page(policy, url, who)
        check_change(policy, url, who)
    elif kind == "page-post":
        status = session_client(who["owner"]).get(url).status_code
        assert status == 405, f"{url}: GET on a state-changing page view got {status}, expected 405"
        check_change(policy, url, who)
    elif kind == "api":
        check_api(policy, url, who)
        if policy.member_ok:
            status = token_client(who["owner"]).get(url).status_code
            assert status < 400, f"{url}: the owner's token got {status}; fix the route's args in POLICY"
    elif kind == "api-write":
        if policy.reads:
            check_api(policy, url, who)
        for method in policy.methods:
            check_api(policy, url, who, method=method.lower(), body=body)
            if policy.min_role != Role.READER:
                response = getattr(token_client(who["reader"]), method.lower())(
                    url, data=json.dumps(body or {}, default=str), content_type="application/json"
                )
                assert response.status_code in (403, 404), f"{url}: a reader's {method} got {response.status_code}"
            if policy.json_body and method in ("POST", "PUT", "PATCH"):
                response = getattr(token_client(who["owner"]), method.lower())(url, data="a=1", content_type="text/plain")
                assert_json_error(response, 415, url, f"a non-JSON {method}")
    elif kind == "mlflow":
        check_mlflow(url, who)


@pytest.fixture
def who(owner, reader, outsider):
    return {"owner": owner, "reader": reader, "outsider": outsider}


GUARDED = sorted(
    key for key, route in ROUTES.items() if policy_for(key, route) is not None and policy_for(key, route).kind != "admin"
)


@pytest.mark.parametrize("key", GUARDED)
def test_it_guards_the_route(key, who, request):
    route = ROUTES[key]
    policy = policy_for(key, route)
    if policy.kind == "mlflow":  # ids travel in the body or query: only the URL itself matters here
        check_mlflow(build_url(route, {"path": "outputs/model.pt", "model_id": "m-0", "key": "k"}), who)
        return
    world = request.getfixturevalue("world")
    url = build_url(route, world.values(policy))
    if policy.query:
        url += re.sub(r"\{([\w.]+)\}", lambda m: str(world.attribute(m.group(1))), policy.query)
    body = {name: world.attribute(attribute) for name, attribute in policy.body}
    check_route(policy, url, who, body=body)


def test_it_guards_every_admin_route(db, who):
    admin_routes = [
        route for key, route in ROUTES.items() if (policy_for(key, route) or Route("unknown")).kind == "admin"
    ]
    assert admin_routes
    # One URL per route shape: every ModelAdmin has the same six; the shape is what could lack a guard.
    shapes = {}
    for route in admin_routes:
        shape = re.sub(r"^admin/[\w-]+/[\w-]+/", "admin/<app>/<model>/", route)
        shapes.setdefault(shape, route)
    for route in shapes.values():
        url = build_url(route, {"app_label": "auth", "url": "auth/user/"})
        response = Client().get(url)
        # 401: django-rq's stats.json wants its own API token
        assert response.status_code in (302, 401, 404, 405), f"{url}: anonymous got {response.status_code}"
        if response.status_code == 302 and not response["Location"].startswith("/login/"):
            response = Client().get(response["Location"])  # e.g. /admin/logout/ → /admin/ → login
        if response.status_code == 302:
            assert "/login/" in response["Location"], f"{url}: redirected to {response['Location']}"
    # a signed-in member who is not staff does not get in either
    assert session_client(who["owner"]).get("/admin/").status_code in (302, 403)
