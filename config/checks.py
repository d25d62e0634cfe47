"""System checks for production mistakes (run by `manage.py check --deploy`)."""

from django.conf import settings
from django.core.checks import Error, Info, Tags, register


@register(Tags.security, deploy=True)
def check_production_settings(app_configs, **kwargs):
    problems = []
    if not settings.PRODUCTION:
        return problems
    if len(settings.SECRET_KEY) < 50 or len(set(settings.SECRET_KEY)) < 5:
        problems.append(Error("SECRET_KEY is too short or too simple for production.", id="torchlight.E001"))
    if not settings.ALLOWED_HOSTS or "*" in settings.ALLOWED_HOSTS:
        problems.append(Error("ALLOWED_HOSTS must list the site's host names in production.", id="torchlight.E002"))
    if settings.DEBUG:
        problems.append(Error("DEBUG must be off in production.", id="torchlight.E003"))
    if settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        problems.append(
            Info(
                "SQLite is the embedded default; production should set DATABASE_URL to PostgreSQL.",
                id="torchlight.W001",
            )
        )
    if settings.EMBEDDED_REDIS:
        problems.append(
            Info("The embedded Redis is for one machine; production should set REDIS_URL.", id="torchlight.W002")
        )
    return problems
