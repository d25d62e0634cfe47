"""Work directories for loader subprocesses: a version's files and the producing run's source.

Files are laid out by their logical paths (each resolved path is checked to
stay inside the work dir); on local storage they are symlinked, on remote
storage copied. Nothing here reads a path a user typed.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from django.conf import settings

from tracker import storage


class SubprocessFailed(Exception):
    pass


def safe_target(root, logical_path):
    root = Path(root).resolve()
    target = (root / logical_path).resolve()
    if not target.is_relative_to(root) or target == root:
        raise ValueError(f"path {logical_path!r} escapes the work dir")
    return target


def place_blob(root, logical_path, key):
    target = safe_target(root, logical_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    local = storage.local_path(key)
    if local is not None:
        os.symlink(local, target)
    else:
        with storage.open_blob(key) as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out, storage.CHUNK)
    return target


def place_version_files(version, root):
    for f in version.files.all():
        place_blob(root, f.path, f.storage_key)


def place_run_source(run, root):
    """Lay out the producing run's source under root; returns root, or None if the run has none.

    Tried in order: the job's source archive (jobs app), the run's `code/`
    artifacts (what a script logs of itself), the bundled example the job ran.
    """
    if run is None:
        return None
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if _place_job_source(run, root):
        return root
    code = list(run.artifacts.filter(path__startswith="code/"))
    if code:
        for artifact in code:
            place_blob(root, artifact.path[len("code/"):], artifact.storage_key)
        return root
    example = _example_name(run)
    if example:
        src = Path(settings.BASE_DIR) / "jobs" / "examples" / example
        if src.is_dir():
            shutil.copytree(src, root, dirs_exist_ok=True)
            return root
    return None


def _job_of(run):
    try:
        from jobs.models import Job
    except ImportError:
        return None
    return Job.objects.filter(run=run).first()


def _place_job_source(run, root):
    job = _job_of(run)
    key = getattr(job, "source_blob_key", "") if job is not None else ""
    filename = getattr(job, "source_filename", "") if job is not None else ""
    if not key or not filename:
        return False
    from jobs import source_archive

    with storage.open_blob(key) as src:
        source_archive.extract_source(src, filename, root)
    return True


def _example_name(run):
    job = _job_of(run)
    name = getattr(job, "example_name", "") if job is not None else ""
    if not name:
        tag = run.tags.filter(key__in=["torchlight.example", "example"]).first()
        name = tag.value if tag else ""
    name = (name or "").strip()
    return name if name and name.replace("_", "").replace("-", "").isalnum() else ""


def subprocess_env():
    """A minimal environment for user code: no server secrets, no database or Redis URLs."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env["PYTHONPATH"] = str(settings.BASE_DIR)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def zygote_socket_path():
    path = Path(settings.DATA_DIR) / "registry-loader.sock"
    if len(str(path)) > 100:  # unix socket paths are limited to ~107 bytes
        import hashlib

        path = Path("/tmp") / f"torchlight-loader-{hashlib.sha1(str(settings.DATA_DIR).encode()).hexdigest()[:12]}.sock"
    return path


def _start_child(module, args, workdir):
    """(pid, stdout text stream, wait() -> exit status): a zygote child, or a plain subprocess as fallback."""
    from registry import conf, zygote

    if conf.USE_ZYGOTE:
        try:
            sock = zygote.connect(
                str(zygote_socket_path()),
                start_argv=[sys.executable, "-m", "registry.zygote", "serve", str(zygote_socket_path())],
                env=subprocess_env(), cwd=str(settings.BASE_DIR), wait=conf.ZYGOTE_START_TIMEOUT,
            )
            pid, read_fd, reader = zygote.spawn(sock, module, args, workdir)
        except (zygote.ZygoteUnavailable, OSError):
            pass
        else:
            stream = os.fdopen(read_fd, "r", buffering=1)

            def wait():
                line = reader.readline()
                sock.close()
                return int(line.split()[1]) if line.startswith("EXIT ") else -9

            return pid, stream, wait
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=str(workdir),
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        start_new_session=True,
    )
    return proc.pid, proc.stdout, proc.wait


def run_loader(module, command, spec, workdir, timeout, on_line=None):
    """Run `python -m <module> [command] spec.json` in workdir (a zygote child or a subprocess); returns its RESULT dict.

    Each other stdout/stderr line goes to on_line(line) as it arrives. The process is killed after `timeout` s.
    """
    import signal
    import threading

    spec_path = Path(workdir) / "spec.json"
    spec_path.write_text(json.dumps(spec))
    args = ([command] if command else []) + [str(spec_path)]
    pid, stream, wait = _start_child(module, args, workdir)

    def kill():
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass

    result = None
    tail = []
    timer = threading.Timer(timeout, kill)
    timer.start()
    try:
        for line in stream:
            line = line.rstrip("\n")
            if line.startswith("RESULT "):
                result = json.loads(line[len("RESULT "):])
                continue
            tail = (tail + [line])[-30:]
            if on_line is not None:
                on_line(line)
        returncode = wait()
    except BaseException:
        kill()
        raise
    finally:
        timer.cancel()
        stream.close()
    if result is None:
        if returncode < 0:
            reason = f"was killed after {timeout} s" if returncode == -9 else f"died with signal {-returncode}"
        else:
            reason = f"exited with status {returncode}"
        last = "; ".join(x for x in tail[-3:] if x.strip())
        raise SubprocessFailed(f"the loader process {reason}{': ' + last if last else ''}")
    return result


def stop_warm_loader():
    """Stop this data dir's warm loader, if one runs (`manage.py up` calls this when it stops)."""
    import signal

    pid_file = Path(str(zygote_socket_path()) + ".pid")
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pid_file.unlink(missing_ok=True)


def warm_loader():
    """Start the warm loader (torch imported once) in the background if none runs; returns at once.

    A worker calls this when it starts so the first export or registration does not pay the import.
    """
    import subprocess

    from registry import conf

    if not conf.USE_ZYGOTE:
        return
    import socket

    path = str(zygote_socket_path())
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
        return
    except OSError:
        pass
    finally:
        probe.close()
    subprocess.Popen(
        [sys.executable, "-m", "registry.zygote", "serve", path], env=subprocess_env(), cwd=str(settings.BASE_DIR),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )


def stop_loader():
    """Stop the warm loader of this data dir, if one runs (it also exits by itself when idle)."""
    import signal

    pid_file = Path(str(zygote_socket_path()) + ".pid")
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except OSError:
        return False
    return True
