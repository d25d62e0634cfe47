"""Job environments: a virtualenv per requirements hash, layered on the project's own venv.

`python -m venv --system-site-packages` makes torch and everything else the
project ships visible, so pip installs only what the requirements add. A
lock file makes concurrent builds of the same hash wait for one another; a
`.ready` marker written last means a half-built venv is never reused.
"""

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from django.conf import settings

from jobs import conf


class EnvironmentBuildFailed(Exception):
    """pip (or venv) failed; the message carries pip's own error."""


def environments_root():
    return Path(settings.DATA_DIR) / "envs"


def env_python(env_dir):
    return Path(env_dir) / "bin" / "python"


class EnvironmentBuildStopped(Exception):
    """`should_stop()` said so (the run was canceled) and the build was killed."""


def ensure_environment(requirements, requirements_hash, log=print, should_stop=None):
    """The python executable for these requirements, building the venv if needed.

    `log(line)` receives the build output, line by line; `should_stop()` is
    asked every second during the build, and True kills pip's process group.
    """
    if not requirements:
        return sys.executable
    root = environments_root()
    root.mkdir(parents=True, exist_ok=True)
    env_dir = root / requirements_hash
    ready = env_dir / ".ready"
    if ready.exists():
        log(f"environment {requirements_hash[:12]} is cached, reusing it")
        return str(env_python(env_dir))
    with open(root / f"{requirements_hash}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second build of the same hash waits here
        if ready.exists():
            log(f"environment {requirements_hash[:12]} was built meanwhile, reusing it")
            return str(env_python(env_dir))
        if env_dir.exists():
            shutil.rmtree(env_dir)  # leftovers of a build that died half-way
        log(f"building environment {requirements_hash[:12]}: {' '.join(requirements)}")
        _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(env_dir)], log)
        _link_parent_site_packages(env_dir)
        # The project's pip, run by the new interpreter, installs into the new venv.
        pip = [str(env_python(env_dir)), "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
               "--progress-bar", "off", "--retries", "2", "--timeout", "30"]
        if conf.PIP_INDEX_URL:
            pip += ["--index-url", conf.PIP_INDEX_URL]
        try:
            _run([*pip, "--", *requirements], log, should_stop)
        except (EnvironmentBuildFailed, EnvironmentBuildStopped):
            shutil.rmtree(env_dir, ignore_errors=True)
            raise
        ready.write_text("\n".join(requirements) + "\n")
        log(f"environment {requirements_hash[:12]} ready")
    return str(env_python(env_dir))


def _link_parent_site_packages(env_dir):
    """Make the project venv's packages (torch, pip ...) visible after the new venv's own.

    --system-site-packages only exposes the base interpreter's packages, not
    those of the venv we run in; a .pth file appends ours.
    """
    import site

    purelib = subprocess.run(
        [str(env_python(env_dir)), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    parents = [p for p in site.getsitepackages() if Path(p).is_dir()]
    Path(purelib).mkdir(parents=True, exist_ok=True)
    (Path(purelib) / "_torchlight_parent_env.pth").write_text("\n".join(parents) + "\n")


def _run(argv, log, should_stop=None):
    env = {k: v for k, v in os.environ.items() if k not in SERVER_SECRETS}
    env["PIP_NO_INPUT"] = "1"
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", env=env,
                                start_new_session=True)
    except OSError as exc:
        raise EnvironmentBuildFailed(f"could not start {argv[0]}: {exc}") from exc
    stopped = threading.Event()

    def watch():
        from django.db import connection

        try:
            while proc.poll() is None:
                try:
                    if should_stop():
                        stopped.set()
                        os.killpg(proc.pid, signal.SIGKILL)
                        return
                except ProcessLookupError:
                    return
                except Exception:  # a failing check must not break the build
                    pass
                time.sleep(1)
        finally:
            connection.close()  # this thread's own database connection

    if should_stop is not None:
        threading.Thread(target=watch, name="env-build-watch", daemon=True).start()
    tail = []
    for line in proc.stdout:
        line = line.rstrip("\n")
        log(line)
        tail = (tail + [line])[-15:]
    try:
        code = proc.wait(timeout=conf.PIP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise EnvironmentBuildFailed(f"environment build took longer than {conf.PIP_TIMEOUT} s") from None
    if stopped.is_set():
        raise EnvironmentBuildStopped("environment build stopped")
    if code != 0:
        errors = [t for t in tail if "ERROR" in t or "error" in t] or tail
        detail = "\n".join(errors[-8:])
        raise EnvironmentBuildFailed(f"environment build failed (pip exit code {code}): {detail}")


# Never handed to user code or pip: the server's own secrets and connection strings.
SERVER_SECRETS = {
    "SECRET_KEY", "DATABASE_URL", "REDIS_URL", "TORCHLIGHT_ADMIN_PASSWORD", "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "TORCHLIGHT_S3_BUCKET", "TORCHLIGHT_S3_ENDPOINT_URL",
    "DJANGO_SETTINGS_MODULE", "EMAIL_HOST_PASSWORD", "TORCHLIGHT_OIDC_CLIENT_SECRET", "PGPASSWORD",
}


def is_secret(name):
    upper = name.upper()
    return (
        upper in SERVER_SECRETS
        or upper.startswith(("TORCHLIGHT_", "AWS_", "DJANGO_", "PG"))
        or any(word in upper for word in ("SECRET", "PASSWORD", "TOKEN", "CREDENTIAL", "PRIVATE_KEY", "API_KEY"))
    )
