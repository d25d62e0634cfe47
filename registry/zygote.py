"""A warm loader: a process that has imported torch, torchvision, onnx and onnxruntime once and forks a
fresh child for each model load, export or prediction.

Importing torch costs seconds; a plain `python -m registry.onnx_export` pays it on every export.
The zygote is started on first use (detached, with the same minimal environment as the plain
subprocess: no server secrets), listens on a unix socket in the data dir, and exits after
ZYGOTE_IDLE seconds without work. Each request forks a child that runs the same module as the
plain subprocess would (`runpy`, so `registry.*` code is imported fresh in the child, never stale),
with its stdout/stderr on the caller's pipe. The caller falls back to a plain subprocess whenever
the zygote cannot be reached.

Protocol: the client sends one JSON line {"module", "argv", "cwd"} with its pipe's write end
attached (SCM_RIGHTS); the zygote answers "PID <pid>\\n" and, when the child ends, "EXIT <status>\\n".
"""

import json
import os
import socket
import sys
import threading
import time

PRELOAD = ("numpy", "torch", "torchvision", "onnx", "onnxruntime", "PIL.Image")
ZYGOTE_IDLE = 900


def _serve_child(conn, request, pipe_fd, listener):
    pid = os.fork()
    if pid == 0:  # the child: becomes `python -m <module> <argv>`
        try:
            import signal

            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            listener.close()
            conn.close()
            os.setsid()
            os.dup2(pipe_fd, 1)
            os.dup2(pipe_fd, 2)
            os.close(pipe_fd)
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.chdir(request["cwd"])
            sys.stdout = os.fdopen(1, "w", buffering=1)
            sys.stderr = os.fdopen(2, "w", buffering=1)
            sys.argv = [request["module"], *request["argv"]]
            import runpy

            code = 0
            try:
                runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        except BaseException:
            import traceback

            traceback.print_exc()
            os._exit(1)
    os.close(pipe_fd)
    conn.sendall(f"PID {pid}\n".encode())
    return pid


def serve(path):
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # run the clean-up below
    for name in PRELOAD:
        try:
            __import__(name)
        except ImportError:
            pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if os.path.exists(path):
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(path)
                return  # another zygote already serves this path
            except OSError:
                os.unlink(path)
            finally:
                probe.close()
        listener.bind(path)
    except OSError:
        return
    os.chmod(path, 0o600)
    with open(path + ".pid", "w") as fh:
        fh.write(str(os.getpid()))
    listener.listen(16)
    listener.settimeout(5)
    active = [0]
    lock = threading.Lock()
    last_used = [time.monotonic()]

    def wait_child(conn, pid):
        try:
            _, status = os.waitpid(pid, 0)
            code = os.waitstatus_to_exitcode(status)
            try:
                conn.sendall(f"EXIT {code}\n".encode())
            except OSError:
                pass
        finally:
            conn.close()
            with lock:
                active[0] -= 1
                last_used[0] = time.monotonic()

    try:
        while True:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                with lock:
                    idle = active[0] == 0 and time.monotonic() - last_used[0] > ZYGOTE_IDLE
                if idle:
                    break
                continue
            try:
                conn.settimeout(10)
                msg, fds, _, _ = socket.recv_fds(conn, 65536, 1)
                conn.settimeout(None)
                request = json.loads(msg.decode())
                if len(fds) != 1:
                    raise ValueError("expected one pipe")
                with lock:
                    active[0] += 1
                pid = _serve_child(conn, request, fds[0], listener)
            except Exception:
                conn.close()
                continue
            threading.Thread(target=wait_child, args=(conn, pid), daemon=True).start()
    finally:
        listener.close()
        for leftover in (path, path + ".pid"):
            try:
                os.unlink(leftover)
            except OSError:
                pass


class ZygoteUnavailable(Exception):
    pass


def connect(path, start_argv=None, env=None, cwd=None, wait=60.0):
    """A connected socket to the zygote at `path`, starting one with `start_argv` if none answers."""
    deadline = time.monotonic() + wait
    started = False
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            return sock
        except OSError:
            sock.close()
        if not started and start_argv:
            import subprocess

            subprocess.Popen(
                start_argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True,
            )
            started = True
        if time.monotonic() > deadline or not start_argv:
            raise ZygoteUnavailable(f"no loader zygote answers on {path}")
        time.sleep(0.1)


def spawn(sock, module, argv, cwd):
    """Ask the zygote for a child running `python -m module argv` in cwd; returns (pid, read_fd)."""
    read_fd, write_fd = os.pipe()
    try:
        payload = json.dumps({"module": module, "argv": list(argv), "cwd": str(cwd)}).encode()
        socket.send_fds(sock, [payload], [write_fd])
    finally:
        os.close(write_fd)
    reader = sock.makefile("r")
    line = reader.readline()
    if not line.startswith("PID "):
        os.close(read_fd)
        raise ZygoteUnavailable("the loader zygote did not start a child")
    return int(line.split()[1]), read_fd, reader


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        serve(sys.argv[2])
    else:
        print("usage: python -m registry.zygote serve SOCKET", file=sys.stderr)
        sys.exit(2)
