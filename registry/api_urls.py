# REST API for the model registry, mounted under /api/v1/ (owned by the registry app).
app_name = "registry-api"
urlpatterns = []
