from django.urls import path

from jobs import views

app_name = "jobs"

urlpatterns = [
    path("w/<slug:slug>/jobs/new", views.job_new, name="job-new"),
    path("w/<slug:slug>/clusters/", views.cluster_list, name="cluster-list"),
    path("w/<slug:slug>/clusters/new", views.cluster_new, name="cluster-new"),
    path("w/<slug:slug>/clusters/<int:pk>/", views.cluster_detail, name="cluster-detail"),
    path("w/<slug:slug>/clusters/<int:pk>/edit", views.cluster_edit, name="cluster-edit"),
    path("w/<slug:slug>/environments/", views.environment_list, name="environment-list"),
    path("w/<slug:slug>/environments/new", views.environment_new, name="environment-new"),
    path("examples/<slug:name>.zip", views.example_download, name="example-download"),
    path("runs/<uuid:run_id>/logs.json", views.run_logs_json, name="run-logs"),
    path("runs/<uuid:run_id>/cancel", views.job_cancel, name="job-cancel"),
]
