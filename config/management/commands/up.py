"""`manage.py up`: the whole embedded set in one command, stopped together on Ctrl-C or SIGTERM.

Migrates, bootstraps, starts the embedded Redis (unless REDIS_URL is set),
the supervisor with its workers (when the jobs app provides one) and the web
server (gunicorn) on 127.0.0.1:$PORT.
"""

import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management import call_command, get_commands
from django.core.management.base import BaseCommand, CommandError

from config import redis as tl_redis
from config.startup import StartupError, check_database, check_redis


class Command(BaseCommand):
    help = "Start Redis (embedded), the supervisor and workers, and the web server; stop all on Ctrl-C."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--web-workers", type=int, default=int(os.environ.get("WEB_WORKERS", "2")))
        parser.add_argument("--no-supervisor", action="store_true", help="do not start the supervisor and workers")

    def handle(self, *args, **options):
        try:
            check_database()
        except StartupError as exc:
            raise CommandError(str(exc)) from None
        call_command("migrate", interactive=False, verbosity=0)
        call_command("bootstrap", stdout=self.stdout)

        started_redis = False
        if settings.EMBEDDED_REDIS:
            started_redis = not tl_redis.ping()
            tl_redis.start_embedded_redis()
        try:
            check_redis()
        except StartupError as exc:
            raise CommandError(str(exc)) from None

        children = []
        env = dict(os.environ, PORT=str(options["port"]), TORCHLIGHT_DATA_DIR=str(settings.DATA_DIR))
        manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
        if not options["no_supervisor"] and "supervisor" in get_commands():
            children.append(subprocess.Popen([*manage, "supervisor"], env=env))
        bind = f"{options['host']}:{options['port']}"
        children.append(
            subprocess.Popen(
                [
                    sys.executable, "-m", "gunicorn", "config.wsgi:application",
                    "--bind", bind,
                    "--workers", str(options["web_workers"]),
                    "--threads", "8",
                    "--timeout", "120",
                    "--access-logfile", "-",
                    "--no-control-socket",  # its default path is per user: two copies side by side would clash
                ],
                env=env,
                cwd=str(settings.BASE_DIR),
            )
        )
        self.stdout.write(self.style.SUCCESS(f"Torchlight is up on http://{bind}/  (data: {settings.DATA_DIR}; Ctrl-C stops)"))

        stopping = False

        def stop(signum, frame):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            while not stopping and all(child.poll() is None for child in children):
                time.sleep(0.5)
        finally:
            for child in children:
                if child.poll() is None:
                    child.terminate()
            deadline = time.monotonic() + 15
            for child in children:
                try:
                    child.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child.kill()
            from registry.workdir import stop_warm_loader

            stop_warm_loader()  # workers start it; it goes with them
            if started_redis:
                tl_redis.stop_embedded_redis()
            self.stdout.write("Torchlight stopped.")
