"""The OpenAPI 3.1 description of REST API v1, served at /api/v1/schema, rendered at /api/v1/docs.

Both are public: they describe the API and hold no data (every data
endpoint needs a token). The docs page is rendered on the server from the
same dict, so it needs no script and no CDN.
"""

from django.http import HttpResponse, JsonResponse
from django.utils.html import format_html, format_html_join
from django.views.decorators.http import require_GET

RUN_ID = {"name": "run_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
KEY = {"name": "key", "in": "path", "required": True, "schema": {"type": "string"}, "description": "metric key (may hold /)"}
PAGE = [
    {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1, "default": 1}},
    {"name": "page_size", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
]
WORKSPACE_Q = {
    "name": "workspace",
    "in": "query",
    "schema": {"type": "string"},
    "description": "workspace slug (default: your first workspace)",
}


def ref(name):
    return {"$ref": f"#/components/schemas/{name}"}


def json_content(schema):
    return {"application/json": {"schema": schema}}


def ok(schema, description="OK", status="200"):
    return {status: {"description": description, "content": json_content(schema)}}


def errors(*codes):
    texts = {
        "400": "Bad input",
        "401": "Missing, unknown, revoked or expired token; run token of an ended run",
        "403": "Role too low, or a run token outside its run",
        "404": "Not found (also: not a member of its workspace)",
        "409": "Conflict",
        "413": "Too large",
        "415": "Body is not JSON",
    }
    return {c: {"$ref": f"#/components/responses/E{c}"} for c in codes if c in texts}


def paged(item):
    return {
        "type": "object",
        "properties": {
            "results": {"type": "array", "items": ref(item)},
            "page": {"type": "integer"},
            "page_size": {"type": "integer"},
            "next_page": {"type": ["integer", "null"]},
        },
        "required": ["results", "page", "page_size", "next_page"],
    }


def body(schema, required=True, content_type="application/json"):
    return {"required": required, "content": {content_type: {"schema": schema}}}


ITEM_ERRORS = {"type": "array", "items": ref("ItemError")}
FLOAT_OR_WORD = {
    "oneOf": [{"type": "number"}, {"type": "string", "enum": ["NaN", "Infinity", "-Infinity"]}, {"type": "null"}]
}

SCHEMAS = {
    "Error": {
        "type": "object",
        "properties": {
            "error": {
                "type": "object",
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "details": {}},
                "required": ["code", "message"],
            }
        },
        "required": ["error"],
    },
    "ItemError": {
        "type": "object",
        "properties": {
            "index": {"type": "integer", "description": "position in the batch (metrics)"},
            "key": {"type": "string", "description": "the key (params, tags)"},
            "code": {"type": "string"},
            "message": {"type": "string"},
        },
        "required": ["code", "message"],
    },
    "Experiment": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "name": {"type": "string"},
            "description": {"type": "string"},
            "workspace": {"type": "string"},
            "tags": {"type": "object"},
            "archived": {"type": "boolean"},
            "created_at": {"type": "string", "format": "date-time"},
        },
    },
    "Run": {
        "type": "object",
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "name": {"type": "string"},
            "experiment_id": {"type": "integer"},
            "experiment": {"type": "string"},
            "workspace": {"type": "string"},
            "status": ref("RunStatus"),
            "status_reason": {"type": "string"},
            "created_by": {"type": ["string", "null"]},
            "created_at": {"type": "string", "format": "date-time"},
            "start_time": {"type": ["string", "null"], "format": "date-time"},
            "end_time": {"type": ["string", "null"], "format": "date-time"},
            "parent_run_id": {"type": ["string", "null"]},
            "progress": {"type": "object"},
            "params": {"type": "object", "additionalProperties": {"type": "string"}},
            "tags": {"type": "object", "additionalProperties": {"type": "string"}},
            "metrics": {"type": "array", "items": ref("MetricSummary")},
        },
    },
    "RunStatus": {
        "type": "string",
        "enum": ["queued", "preparing", "scaling", "running", "post_processing", "completed", "failed", "canceled"],
    },
    "MetricSummary": {
        "type": "object",
        "properties": {
            "key": {"type": "string"},
            "count": {"type": "integer"},
            "nonfinite_count": {"type": "integer"},
            "last": FLOAT_OR_WORD,
            "last_step": {"type": ["integer", "null"]},
            "last_timestamp": {"type": ["number", "null"]},
            "min": {"type": ["number", "null"]},
            "max": {"type": ["number", "null"]},
        },
    },
    "MetricPoint": {
        "type": "object",
        "properties": {
            "key": {"type": "string", "maxLength": 250},
            "value": {"oneOf": [{"type": "number"}, {"type": "string", "enum": ["NaN", "Infinity", "-Infinity"]}]},
            "step": {"type": ["integer", "null"], "minimum": 0, "maximum": 9223372036854775807},
            "timestamp": {"type": ["number", "null"], "description": "unix seconds; default now"},
            "epoch": {"type": ["number", "null"]},
        },
        "required": ["key", "value"],
    },
    "IngestResult": {
        "type": "object",
        "properties": {
            "stored": {"type": "integer"},
            "errors": ITEM_ERRORS,
            "duplicate": {"type": "boolean", "description": "the idempotency key was seen: nothing stored again"},
        },
    },
    "KeyValueResult": {"type": "object", "properties": {"stored": {"type": "integer"}, "errors": ITEM_ERRORS}},
    "HistoryPage": {
        "type": "object",
        "properties": {
            "key": {"type": "string"},
            "points": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "step": {"type": "integer"},
                        "value": FLOAT_OR_WORD,
                        "timestamp": {"type": "number"},
                        "epoch": {"type": ["number", "null"]},
                    },
                },
            },
            "next_page_token": {"type": ["string", "null"]},
        },
    },
    "ChartData": {
        "type": "object",
        "properties": {
            "key": {"type": "string"},
            "xaxis": {"type": "string", "enum": ["step", "time", "epoch"]},
            "x": {"type": "array", "items": {"type": ["number", "null"]}},
            "y": {"type": "array", "items": {"type": ["number", "null"]}, "description": "null where non-finite"},
            "steps": {"type": "array", "items": {"type": "integer"}},
            "nonfinite": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "x": {"type": ["number", "null"]},
                        "step": {"type": "integer"},
                        "value": {"type": "string", "enum": ["NaN", "Infinity", "-Infinity"]},
                    },
                },
            },
            "total_points": {"type": "integer", "description": "raw points in the requested range"},
            "returned_points": {"type": "integer"},
            "series_points": {"type": "integer"},
            "downsampled": {"type": "boolean"},
            "level": {"type": ["integer", "null"], "description": "bucket level used (2^level steps), null: raw"},
            "last_step": {"type": ["integer", "null"]},
            "live": {"type": "boolean"},
        },
    },
    "Artifact": {
        "type": "object",
        "properties": {
            "path": {"type": "string"},
            "size": {"type": "integer"},
            "sha256": {"type": "string"},
            "content_type": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"},
        },
    },
}

CHART_PARAMS = [
    {"name": "x", "in": "query", "schema": {"type": "string", "enum": ["step", "time", "epoch"], "default": "step"}},
    {"name": "from", "in": "query", "schema": {"type": "number"}, "description": "range start in x units"},
    {"name": "to", "in": "query", "schema": {"type": "number"}, "description": "range end in x units"},
    {"name": "points", "in": "query", "schema": {"type": "integer", "minimum": 2, "maximum": 20000, "default": 2000}},
    {"name": "since", "in": "query", "schema": {"type": "integer"}, "description": "only points after this step"},
]


PACKED_POINTS = "application/vnd.torchlight.points"
PACKED_LAYOUT = (
    "Little-endian, no padding: magic b'TLP1', n_keys uint32, n_points uint32, n_keys x (uint16 byte length, "
    "UTF-8 key), then n_points x each of key_index uint32, value float64 (NaN/±Inf as IEEE values), step int64 "
    "(-1: none), timestamp float64 (unix seconds), epoch float64 (NaN: none). Same answer as a JSON body; a "
    "malformed body is 400 invalid_body (tracker.client.wire encodes and decodes it)."
)


def op(summary, responses, parameters=None, request_body=None, tag="runs", description=None):
    operation = {"summary": summary, "tags": [tag], "responses": responses}
    if parameters:
        operation["parameters"] = parameters
    if request_body:
        operation["requestBody"] = request_body
    if description:
        operation["description"] = description
    return operation


PATHS = {
    "/api/v1/whoami": {
        "get": op(
            "Who the token belongs to",
            {**ok({"type": "object"}), **errors("401")},
            tag="auth",
        )
    },
    "/api/v1/experiments": {
        "get": op(
            "List experiments of a workspace",
            {**ok(paged("Experiment")), **errors("401", "403", "404")},
            [WORKSPACE_Q, {"name": "archived", "in": "query", "schema": {"type": "boolean"}}, *PAGE],
            tag="experiments",
        ),
        "post": op(
            "Create an experiment (contributor)",
            {**ok(ref("Experiment"), "Created", "201"), **errors("400", "401", "403", "404", "409", "415")},
            request_body=body(
                {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string", "maxLength": 200},
                        "description": {"type": "string"},
                        "workspace": {"type": "string"},
                    },
                    "required": ["name"],
                }
            ),
            tag="experiments",
        ),
    },
    "/api/v1/experiments/{id}": {
        "get": op(
            "Get an experiment",
            {**ok(ref("Experiment")), **errors("401", "404")},
            [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}],
            tag="experiments",
        )
    },
    "/api/v1/runs": {
        "get": op(
            "Search runs",
            {**ok(paged("Run")), **errors("400", "401", "403", "404")},
            [
                WORKSPACE_Q,
                {"name": "experiment_id", "in": "query", "schema": {"type": "integer"}},
                {
                    "name": "filter",
                    "in": "query",
                    "schema": {"type": "string"},
                    "description": "MLflow-style filter, e.g. metrics.loss < 0.3 and params.opt = 'adam'",
                },
                {"name": "order_by", "in": "query", "schema": {"type": "string", "default": "-created_at"}},
                *PAGE,
            ],
        ),
        "post": op(
            "Create a run in an experiment (by id, or by name: created if missing)",
            {**ok(ref("Run"), "Created", "201"), **errors("400", "401", "403", "404", "415")},
            request_body=body(
                {
                    "type": "object",
                    "properties": {
                        "experiment_id": {"type": "integer"},
                        "experiment": {"type": "string"},
                        "workspace": {"type": "string"},
                        "name": {"type": "string"},
                        "params": {"type": "object"},
                        "tags": {"type": "object"},
                        "status": ref("RunStatus"),
                        "parent_run_id": {"type": "string", "format": "uuid"},
                        "source_note": {"type": "string"},
                    },
                }
            ),
        ),
    },
    "/api/v1/runs/{run_id}": {
        "get": op("Get a run with params, tags and metric summaries", {**ok(ref("Run")), **errors("401", "404")}, [RUN_ID]),
        "patch": op(
            "Rename a run or change its status (terminal states are final)",
            {**ok(ref("Run")), **errors("400", "401", "403", "404", "409", "415")},
            [RUN_ID],
            body(
                {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "status": ref("RunStatus"),
                        "reason": {"type": "string"},
                        "end": {"type": "boolean", "description": "true: status completed unless given"},
                    },
                }
            ),
        ),
    },
    "/api/v1/runs/{run_id}/params": {
        "post": op(
            "Log params (immutable: a different value is a per-item error)",
            {**ok(ref("KeyValueResult")), **errors("400", "401", "403", "404", "415")},
            [RUN_ID],
            body({"type": "object", "properties": {"params": {"type": "object"}}, "required": ["params"]}),
        )
    },
    "/api/v1/runs/{run_id}/tags": {
        "post": op(
            "Set tags (overwrite)",
            {**ok(ref("KeyValueResult")), **errors("400", "401", "403", "404", "415")},
            [RUN_ID],
            body({"type": "object", "properties": {"tags": {"type": "object"}}, "required": ["tags"]}),
        )
    },
    "/api/v1/runs/{run_id}/progress": {
        "post": op(
            "Report progress (current of total)",
            {**ok({"type": "object"}), **errors("400", "401", "403", "404", "415")},
            [RUN_ID],
            body({"type": "object", "properties": {"current": {"type": "number"}, "total": {"type": "number"}}}),
        )
    },
    "/api/v1/runs/{run_id}/metrics": {
        "get": op(
            "List metric keys with summaries",
            {**ok({"type": "object", "properties": {"metrics": {"type": "array", "items": ref("MetricSummary")}}}), **errors("401", "404")},
            [RUN_ID],
            tag="metrics",
        ),
        "post": op(
            "Ingest a batch of metric points (≤ 50,000); bad items reported, good ones stored",
            {**ok(ref("IngestResult")), **errors("400", "401", "403", "404", "413", "415")},
            [
                RUN_ID,
                {
                    "name": "Idempotency-Key", "in": "header", "required": False,
                    "schema": {"type": "string", "minLength": 1, "maxLength": 200},
                    "description": "packed bodies only (a JSON body carries idempotency_key)",
                },
            ],
            {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "points": {"type": "array", "items": ref("MetricPoint"), "maxItems": 50000},
                                "idempotency_key": {"type": "string", "maxLength": 200},
                            },
                            "required": ["points"],
                        }
                    },
                    PACKED_POINTS: {"schema": {"type": "string", "format": "binary", "description": PACKED_LAYOUT}},
                },
            },
            tag="metrics",
        ),
    },
    "/api/v1/runs/{run_id}/metrics/{key}/history": {
        "get": op(
            "Raw history in step order, paginated",
            {**ok(ref("HistoryPage")), **errors("400", "401", "404")},
            [
                RUN_ID,
                KEY,
                {"name": "start_step", "in": "query", "schema": {"type": "integer"}},
                {"name": "end_step", "in": "query", "schema": {"type": "integer"}},
                {"name": "max_results", "in": "query", "schema": {"type": "integer", "maximum": 50000, "default": 10000}},
                {"name": "page_token", "in": "query", "schema": {"type": "string"}},
            ],
            tag="metrics",
        )
    },
    "/api/v1/runs/{run_id}/metrics/{key}/chart": {
        "get": op(
            "Chart data: at most ~N points, every interval's min and max kept",
            {**ok(ref("ChartData")), **errors("400", "401", "404")},
            [RUN_ID, KEY, *CHART_PARAMS],
            tag="metrics",
        )
    },
    "/api/v1/runs/{run_id}/metrics/{key}/csv": {
        "get": op(
            "Full history as CSV (streamed)",
            {"200": {"description": "CSV", "content": {"text/csv": {"schema": {"type": "string"}}}}, **errors("401", "404")},
            [RUN_ID, KEY],
            tag="metrics",
        )
    },
    "/api/v1/runs/{run_id}/artifacts": {
        "get": op(
            "List artifacts",
            {**ok(paged("Artifact")), **errors("401", "404")},
            [RUN_ID, {"name": "prefix", "in": "query", "schema": {"type": "string"}}, *PAGE],
            tag="artifacts",
        )
    },
    "/api/v1/runs/{run_id}/artifacts/{path}": {
        "get": op(
            "Download an artifact",
            {
                "200": {"description": "the bytes", "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
                **errors("401", "404"),
            },
            [RUN_ID, {"name": "path", "in": "path", "required": True, "schema": {"type": "string"}}],
            tag="artifacts",
        ),
        "put": op(
            "Upload an artifact (raw body, streamed to storage; replaces one at the same path)",
            {**ok(ref("Artifact"), "Created", "201"), **errors("400", "401", "403", "404", "413")},
            [
                RUN_ID,
                {"name": "path", "in": "path", "required": True, "schema": {"type": "string"}},
                {"name": "content_type", "in": "query", "schema": {"type": "string"}},
            ],
            body({"type": "string", "format": "binary"}, content_type="application/octet-stream"),
            tag="artifacts",
        ),
    },
}


def build_schema():
    responses = {
        f"E{code}": {"description": text, "content": json_content(ref("Error"))}
        for code, text in {
            "400": "Bad input",
            "401": "Missing, unknown, revoked or expired token; a run token whose run ended",
            "403": "Role too low, or a run token outside its run",
            "404": "Not found (also: not a member of its workspace)",
            "409": "Conflict",
            "413": "Too large",
            "415": "Body is not JSON",
        }.items()
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Torchlight REST API",
            "version": "1",
            "description": "Experiments, runs, params, tags, metrics and artifacts. Authenticate with "
            "`Authorization: Bearer <token>` (a personal token from Settings → API tokens, or a run token).",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": PATHS,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": SCHEMAS,
            "responses": responses,
        },
    }


@require_GET
def openapi_schema(request):
    return JsonResponse(build_schema(), json_dumps_params={"indent": 1})


openapi_schema.public_page = True  # no data: describes the API only


def _params_html(parameters):
    if not parameters:
        return ""
    rows = format_html_join(
        "",
        "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
        (
            (p["name"], p["in"], p.get("schema", {}).get("type", ""), p.get("description", ""))
            for p in parameters
        ),
    )
    return format_html("<table class='table'><tr><th>name</th><th>in</th><th>type</th><th>about</th></tr>{}</table>", rows)


@require_GET
def api_docs(request):
    schema = build_schema()
    sections = []
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            responses = ", ".join(sorted(operation["responses"]))
            sections.append(
                format_html(
                    "<section class='api-op'><h3><code>{} {}</code></h3><p>{}</p>{}<p>Responses: {}</p></section>",
                    method.upper(),
                    path,
                    operation["summary"],
                    _params_html(operation.get("parameters")),
                    responses,
                )
            )
    html = format_html(
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Torchlight API v1</title>"
        "<link rel='stylesheet' href='/static/css/torchlight.css'></head><body><main class='page'>"
        "<h1>Torchlight REST API v1</h1><p>{}</p><p>Machine-readable: <a href='/api/v1/schema'>OpenAPI 3.1 schema</a>. "
        "Guide: docs/api.md.</p>{}</main></body></html>",
        schema["info"]["description"],
        format_html_join("", "{}", ((s,) for s in sections)),
    )
    return HttpResponse(html)


api_docs.public_page = True
