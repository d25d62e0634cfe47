"""Chart data for the run and compare pages (owned by the tracking data path)."""

from django.contrib.auth.decorators import login_required
from django.http import JsonResponse

from tracker.access import get_run_for_user


@login_required
def metric_chart_json(request, run_id, key):
    get_run_for_user(request.user, run_id)
    return JsonResponse({"key": key, "x": [], "y": [], "total_points": 0, "returned_points": 0})


@login_required
def metric_csv(request, run_id, key):
    get_run_for_user(request.user, run_id)
    return JsonResponse({"error": {"code": "not_implemented", "message": "CSV export is not built yet"}}, status=501)
