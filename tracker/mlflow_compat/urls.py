"""Routes of the MLflow-compatible API, under the prefixes the mlflow client uses.

Mounted at the site root by config/urls.py: /api/2.0/mlflow/..., the same
under /ajax-api/2.0/ and /api/3.0/, and the artifact proxy /api/2.0/mlflow-artifacts/.
"""

from django.urls import include, path

from tracker.mlflow_compat import artifacts, logged_models, registry_views, views

tracking = [
    path("experiments/get-by-name", views.experiment_get_by_name),
    path("experiments/get", views.experiment_get),
    path("experiments/create", views.experiment_create),
    path("experiments/search", views.experiment_search),
    path("experiments/delete", views.experiment_delete),
    path("experiments/restore", views.experiment_restore),
    path("experiments/update", views.experiment_update),
    path("experiments/set-experiment-tag", views.experiment_set_tag),
    path("experiments/delete-experiment-tag", views.experiment_delete_tag),
    path("runs/create", views.run_create),
    path("runs/get", views.run_get),
    path("runs/update", views.run_update),
    path("runs/search", views.run_search),
    path("runs/log-metric", views.log_metric),
    path("runs/log-batch", views.log_batch),
    path("runs/log-parameter", views.log_param),
    path("runs/set-tag", views.set_tag),
    path("runs/delete-tag", views.delete_tag),
    path("runs/log-inputs", views.log_inputs),
    path("runs/outputs", views.log_outputs),
    path("metrics/get-history", views.metric_history),
    path("logged-models", logged_models.create),
    path("logged-models/search", logged_models.search),
    path("logged-models/<str:model_id>", logged_models.detail),
    path("logged-models/<str:model_id>/tags", logged_models.set_tags),
    path("logged-models/<str:model_id>/tags/<path:key>", logged_models.delete_tag),
    path("logged-models/<str:model_id>/params", logged_models.log_params),
    path("logged-models/<str:model_id>/artifacts/directories", logged_models.list_artifacts),
    path("registered-models/create", registry_views.registered_model_create),
    path("registered-models/get", registry_views.registered_model_get),
    path("registered-models/update", registry_views.registered_model_update),
    path("registered-models/delete", registry_views.registered_model_delete),
    path("registered-models/search", registry_views.registered_model_search),
    path("registered-models/set-tag", registry_views.registered_model_set_tag),
    path("registered-models/get-latest-versions", registry_views.latest_versions),
    path("registered-models/alias", registry_views.alias),
    path("model-versions/create", registry_views.model_version_create),
    path("model-versions/get", registry_views.model_version_get),
    path("model-versions/get-download-uri", registry_views.model_version_download_uri),
    path("model-versions/update", registry_views.model_version_update),
    path("model-versions/delete", registry_views.model_version_delete),
    path("model-versions/set-tag", registry_views.model_version_set_tag),
    path("model-versions/search", registry_views.model_version_search),
]

artifact_proxy = [
    path("artifacts", artifacts.artifact_list),
    path("artifacts/<path:path>", artifacts.artifact_file),
]

urlpatterns = [
    path("api/2.0/mlflow/", include(tracking)),
    path("ajax-api/2.0/mlflow/", include(tracking)),
    path("api/3.0/mlflow/", include(tracking)),
    path("api/2.0/mlflow-artifacts/", include(artifact_proxy)),
    path("ajax-api/2.0/mlflow-artifacts/", include(artifact_proxy)),
]
