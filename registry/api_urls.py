# REST API for the model registry, mounted under /api/v1/ (owned by the registry app).
from django.urls import path

from registry import api_views

app_name = "registry-api"
urlpatterns = [
    path("models", api_views.models, name="models"),
    path("models/<str:name>", api_views.model_detail, name="model-detail"),
    path("models/<str:name>/versions", api_views.versions, name="versions"),
    path("models/<str:name>/versions/<int:number>", api_views.version_detail, name="version-detail"),
    path("models/<str:name>/versions/<int:number>/download", api_views.version_download, name="version-download"),
    path("models/<str:name>/versions/<int:number>/files/<int:file_id>", api_views.file_download, name="file-download"),
    path("models/<str:name>/versions/<int:number>/export", api_views.version_export, name="version-export"),
    path("models/<str:name>/aliases/<str:alias>", api_views.alias_detail, name="alias-detail"),
    path("exports/<int:export_id>", api_views.export_detail, name="export-detail"),
]
