"""Errors in MLflow's shape: {"error_code": "...", "message": "..."} with the status the client expects.

Client mistakes are 4xx, never 5xx: the mlflow client retries 5xx for minutes.
"""

from django.http import JsonResponse

STATUS = {
    "INVALID_PARAMETER_VALUE": 400,
    "RESOURCE_ALREADY_EXISTS": 400,
    "INVALID_STATE": 400,
    "BAD_REQUEST": 400,
    "RESOURCE_LIMIT_EXCEEDED": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "RESOURCE_DOES_NOT_EXIST": 404,
    "ENDPOINT_NOT_FOUND": 404,
    "NOT_IMPLEMENTED": 501,
}


class MlflowError(Exception):
    def __init__(self, code, message, status=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or STATUS.get(code, 400)


def invalid(message):
    return MlflowError("INVALID_PARAMETER_VALUE", message)


def not_found(message):
    return MlflowError("RESOURCE_DOES_NOT_EXIST", message)


def already_exists(message):
    return MlflowError("RESOURCE_ALREADY_EXISTS", message)


def denied(message):
    return MlflowError("PERMISSION_DENIED", message)


def error_response(error):
    return JsonResponse({"error_code": error.code, "message": error.message}, status=error.status)
