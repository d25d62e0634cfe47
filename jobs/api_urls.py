# REST API for jobs and clusters, mounted under /api/v1/ (owned by the jobs app).
app_name = "jobs-api"
urlpatterns = []
