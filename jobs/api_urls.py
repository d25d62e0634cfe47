# REST API for jobs and clusters, mounted under /api/v1/ (owned by the jobs app).
from django.urls import path

from jobs import api_views

app_name = "jobs-api"

urlpatterns = [
    path("jobs", api_views.jobs_collection, name="jobs"),
    path("jobs/<uuid:run_id>", api_views.job_detail, name="job-detail"),
    path("jobs/<uuid:run_id>/cancel", api_views.job_cancel, name="job-cancel"),
    path("runs/<uuid:run_id>/logs", api_views.run_logs, name="run-logs"),
    path("clusters", api_views.clusters_collection, name="clusters"),
    path("sources", api_views.sources_collection, name="sources"),
]
