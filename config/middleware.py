"""Response headers and request bounds shared by every view."""


from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from django.http import HttpResponse, JsonResponse
from django.template.loader import render_to_string
from django.utils.html import escape

from config.uploads import human_bytes, too_large_message

# Pages load scripts and styles from our own origin only; plotly needs inline
# styles and blob: workers for WebGL traces. User content never runs here.
DEFAULT_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; worker-src 'self' blob:; connect-src 'self'; "
    "object-src 'none'; base-uri 'self'; frame-ancestors 'none'; form-action 'self'"
)


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response
        self.policy = getattr(settings, "CONTENT_SECURITY_POLICY", DEFAULT_CSP)

    def __call__(self, request):
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", self.policy)
        return response


def wants_json(request):
    """API and MLflow-compatible routes answer JSON errors; pages answer HTML."""
    path = request.path_info
    return path.startswith("/api/") or "/api/2.0/" in path or path.startswith("/ajax-api/")


def error(request, status, code, message):
    if wants_json(request):
        return JsonResponse({"error": {"code": code, "message": message}}, status=status)
    try:
        body = render_to_string("413.html" if status == 413 else "400.html", {"message": message}, request=request)
    except Exception:  # no template: a plain page is enough
        body = f"<!doctype html><title>{status}</title><h1>{status}</h1><p>{escape(message)}</p>"
    return HttpResponse(body, status=status, content_type="text/html; charset=utf-8")


class RequestSizeLimitMiddleware:
    """Refuses bodies over the configured limits with 413 before they cost memory or disk.

    1. A Content-Length over MAX_UPLOAD_BYTES: 413 before a byte of the body is read.
    2. Multipart POSTs are parsed here (CSRF would parse them next anyway) through
       config.uploads.BoundedUploadHandler, which stops a body that grows past the
       limit while streaming; the temp files are closed and deleted; 413.
    3. A view touching request.body over DATA_UPLOAD_MAX_MEMORY_SIZE: 413, and
       more than DATA_UPLOAD_MAX_NUMBER_FIELDS fields: 400, both with a clear message.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        limit = settings.MAX_UPLOAD_BYTES
        raw_length = request.META.get("CONTENT_LENGTH") or "0"
        try:
            length = int(raw_length)
        except ValueError:
            return error(request, 400, "bad_request", "Content-Length is not a number")
        if length < 0:
            return error(request, 400, "bad_request", "Content-Length is negative")
        if length > limit:
            return error(request, 413, "request_too_large", too_large_message(limit))
        if request.method == "POST" and request.content_type == "multipart/form-data":
            try:
                request.FILES  # noqa: B018  (parse now, through the bounded handler)
            except TooManyFieldsSent:
                return self.too_many_fields(request)
            except RequestDataTooBig:
                return self.too_big(request)
            if getattr(request, "upload_too_large", False):
                return error(request, 413, "request_too_large", too_large_message(limit))
        return self.get_response(request)

    def process_exception(self, request, exception):
        if isinstance(exception, RequestDataTooBig):
            return self.too_big(request)
        if isinstance(exception, TooManyFieldsSent):
            return self.too_many_fields(request)
        return None

    def too_big(self, request):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return error(request, 413, "request_too_large", f"the request body is larger than the limit of {human_bytes(limit)}")

    def too_many_fields(self, request):
        limit = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
        return error(request, 400, "too_many_fields", f"the request has more than {limit} fields")




class RejectNulBytesMiddleware:
    """A NUL byte in the path or query string never names anything: 404 before any view runs.

    PostgreSQL refuses NUL in text, so letting one reach a lookup would turn a
    hostile URL into a 500 (SQLite would merely find nothing).
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if "\x00" in request.path or any("\x00" in key or "\x00" in value for key, value in request.GET.items()):
            return error(request, 404, "not_found", "nothing here: the URL contains a NUL byte")
        return self.get_response(request)
