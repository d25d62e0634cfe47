from django.urls import path

from registry import views

app_name = "registry"

urlpatterns = [
    path("w/<slug:slug>/models/", views.model_list, name="model-list"),
    path("w/<slug:slug>/models/register/", views.register_upload, name="register-upload"),
    path("runs/<uuid:run_id>/register-model/", views.register_from_run, name="register-from-run"),
    path("models/<int:pk>/", views.model_detail, name="model-detail"),
    path("models/<int:pk>/delete/", views.model_delete, name="model-delete"),
    path("models/<int:pk>/description/", views.model_describe, name="model-describe"),
    path("models/<int:pk>/versions/<int:version>/description/", views.version_describe, name="version-describe"),
    path("models/<int:pk>/aliases/", views.alias_set, name="alias-set"),
    path("models/<int:pk>/aliases/<str:alias>/delete/", views.alias_delete, name="alias-delete"),
    path("models/<int:pk>/exports/<int:export_id>.json", views.export_status, name="export-status"),
    path("models/<int:pk>/tries/<int:request_id>.json", views.try_status, name="try-status"),
    path("models/<int:pk>/versions/<int:version>/", views.version_detail, name="version-detail"),
    path("models/<int:pk>/versions/<int:version>/files/<int:file_id>/download", views.download_file, name="file-download"),
    path("models/<int:pk>/versions/<int:version>/download.zip", views.download_zip, name="version-zip"),
    path("models/<int:pk>/versions/<int:version>/export/", views.export_request, name="export-request"),
    path("models/<int:pk>/versions/<int:version>/try/", views.try_request, name="try-request"),
]
