from tracker.api.base import api_endpoint, json_response


@api_endpoint(methods=("GET",))
def whoami(request):
    token = request.api_token
    return json_response(
        {"user": request.api_user.username, "token": token.name, "run_id": str(token.run_id) if token.run_id else None}
    )
