import subprocess
import sys

import pytest
from django.conf import settings

from config.testing import subprocess_database_url, subprocess_env
from tracker.models import Workspace


@pytest.mark.django_db(transaction=True)
def test_it_lets_a_subprocess_see_the_test_database_on_either_backend():
    Workspace.objects.create(name="Seen from outside", slug="seen-from-outside")
    code = (
        "import os,django;os.environ.setdefault('DJANGO_SETTINGS_MODULE','config.settings');django.setup();"
        "from django.db import connection;from tracker.models import Workspace;"
        "print(connection.vendor, Workspace.objects.filter(slug='seen-from-outside').count())"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=subprocess_env(), cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    from django.db import connection

    assert result.stdout.split() == [connection.vendor, "1"]


@pytest.mark.django_db
def test_it_names_the_test_database():
    from django.db import connection

    url = subprocess_database_url()
    assert connection.settings_dict["NAME"].rsplit("/", 1)[-1] in url.replace("%2F", "/")
    assert url.startswith("sqlite:///" if connection.vendor == "sqlite" else "postgres://")
