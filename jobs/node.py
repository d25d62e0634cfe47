"""What a worker does with one node of a job: Preparing → Scaling → Running → Post-processing.

Runs inside the RQ work horse. The JobNode row is claimed with a
conditional update, so a second delivery of the same RQ job (or a stale
attempt) does nothing; every later write is conditional on this attempt
still owning the slot and on the run not being finished.

The training script runs as a subprocess in a session of its own, so a
cancel, a max-duration stop or a lost worker kills the whole process tree
(torchrun and all its ranks) with one killpg.
"""

import collections
import logging
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from jobs import conf
from jobs.environments import EnvironmentBuildFailed, EnvironmentBuildStopped, ensure_environment
from jobs.models import (
    JOB_NODE_DONE,
    Backend,
    ClusterKind,
    ClusterNode,
    Environment,
    Job,
    JobNode,
    JobNodeStatus,
    LogStream,
    SourceKind,
    write_log,
)
from tracker.models import TERMINAL_STATUSES, ApiToken, Run, RunStatus

logger = logging.getLogger("torchlight.jobs")

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
RANK_PREFIX = re.compile(r"^\[rank(\d+)\]:")
# Passed through from the worker's environment; everything else (secrets above all) is dropped.
PASS_THROUGH_ENV = ("HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM", "SHELL", "XDG_CACHE_HOME",
                    "TORCH_HOME", "HF_HOME", "CUDA_HOME", "CUDA_PATH", "NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME",
                    "NCCL_DEBUG", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
STDERR_TAIL_LINES = 20


class NodeStopped(Exception):
    """The node stops early: the run is over (failed elsewhere, canceled) or this attempt is stale."""


class NodeFailed(Exception):
    """This node fails the run with `reason`."""


class LogPump:
    """Buffers log lines from several threads and writes them to the database in batches (~4 per second)."""

    def __init__(self, run_id, node_rank, interval=0.25):
        self.run_id = run_id
        self.node_rank = node_rank
        self.interval = interval
        self.count = 0
        self.truncated = False
        self.queue = queue.Queue()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="log-pump", daemon=True)
        self.thread.start()

    def add(self, text, stream=LogStream.STDOUT, rank=None, source=""):
        self.count += 1
        if self.count > conf.MAX_LOG_LINES_PER_NODE and stream != LogStream.SYSTEM:
            if not self.truncated:
                self.truncated = True
                self.system(f"log truncated: more than {conf.MAX_LOG_LINES_PER_NODE} lines from this node")
            return
        self.queue.put({"node_rank": self.node_rank, "rank": rank, "stream": stream, "source": source,
                        "text": text, "created_at": timezone.now()})

    def system(self, text):
        self.add(text, stream=LogStream.SYSTEM)

    def _drain(self):
        batch = []
        while True:
            try:
                batch.append(self.queue.get_nowait())
            except queue.Empty:
                break
            if len(batch) >= 2000:
                break
        return batch

    def _loop(self):
        try:
            while not self.stopping.is_set() or not self.queue.empty():
                batch = self._drain()
                if batch:
                    try:
                        write_log(self.run_id, batch)
                    except Exception:  # a log write must never kill the job
                        logger.exception("could not store %d log lines", len(batch))
                if not batch or len(batch) < 2000:
                    self.stopping.wait(self.interval)
        finally:
            connection.close()

    def close(self):
        self.stopping.set()
        self.thread.join(timeout=30)


class Heartbeat:
    """Beats the JobNode row every few seconds; notices when the worker process that forked us is gone."""

    def __init__(self, job_node):
        self.job_node = job_node
        self.parent_pid = os.getppid()
        self.orphaned = threading.Event()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)
        self.thread.start()

    def _loop(self):
        try:
            while not self.stopping.wait(conf.HEARTBEAT_SECONDS):
                if os.getppid() != self.parent_pid:
                    self.orphaned.set()  # the worker died (SIGKILL): stop beating, the node is lost
                    return
                try:
                    JobNode.objects.filter(pk=self.job_node.pk, attempt=self.job_node.attempt).exclude(
                        status__in=JOB_NODE_DONE
                    ).update(heartbeat_at=timezone.now())
                except Exception:
                    logger.exception("heartbeat failed")
        finally:
            connection.close()

    def close(self):
        self.stopping.set()
        self.thread.join(timeout=10)


def kill_process_tree(proc, grace=None):
    """SIGTERM the process group, SIGKILL it after `grace` seconds; returns the exit code."""
    grace = conf.KILL_GRACE_SECONDS if grace is None else grace
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group, even if the leader exited
    except ProcessLookupError:
        pass
    return proc.wait()


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def node_address(cluster):
    configured = os.environ.get("TORCHLIGHT_NODE_ADDRESS")
    if configured:
        return configured
    if cluster is None or cluster.kind == ClusterKind.LOCAL:
        return "127.0.0.1"
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return socket.gethostname()


def work_dir_for(job_node):
    return Path(settings.DATA_DIR) / "jobs" / str(job_node.job_id) / f"node-{job_node.node_rank}-try-{job_node.attempt}"


def current_worker_node():
    node_id = os.environ.get("TORCHLIGHT_WORKER_NODE_ID")
    if not node_id:
        return None
    return ClusterNode.objects.filter(pk=node_id).first()


def execute_job_node(job_id, node_rank, attempt, worker=None):
    """Run node `node_rank` of job `job_id` as attempt `attempt`. Returns a short outcome word."""
    close_old_connections()
    job_node = JobNode.objects.filter(job_id=job_id, node_rank=node_rank).select_related("job").first()
    if job_node is None:
        return "gone"
    if not job_node.claim(attempt, worker):
        return "not-claimed"  # another attempt has it, or it was canceled before it started
    NodeExecution(job_node, worker).run()
    return job_node.status


class NodeExecution:
    def __init__(self, job_node, worker):
        self.job_node = job_node
        self.job = Job.objects.select_related("run", "cluster", "environment", "resume_from", "submitted_by").get(
            pk=job_node.job_id
        )
        self.run_obj = self.job.run
        self.worker = worker
        self.proc = None
        self.token = None
        self.stderr_tail = collections.deque(maxlen=STDERR_TAIL_LINES)
        self.work_dir = work_dir_for(job_node)

    # -- checks ---------------------------------------------------------------------------------------

    def run_status(self):
        return Run.objects.filter(pk=self.run_obj.pk).values_list("status", flat=True).first()

    def check_still_wanted(self):
        """NodeStopped when the run ended, the job was canceled, or this attempt lost its slot."""
        status = self.run_status()
        if status is None or status in TERMINAL_STATUSES:
            raise NodeStopped(f"run is {status}")
        if Job.objects.filter(pk=self.job.pk, cancel_requested_at__isnull=False).exists():
            raise NodeStopped("canceled")
        if not self.job_node.still_mine():
            raise NodeStopped("stale attempt")

    def stop_requested(self):
        try:
            self.check_still_wanted()
        except NodeStopped:
            return True
        return False

    # -- main -----------------------------------------------------------------------------------------

    def run(self):
        self.log = LogPump(self.run_obj.pk, self.job_node.node_rank)
        self.heartbeat = Heartbeat(self.job_node)
        if self.worker is not None:
            self.worker.mark_busy(self.job)
        outcome = None
        try:
            self.check_still_wanted()
            where = f"{self.worker.name} ({self.worker.hostname})" if self.worker else socket.gethostname()
            self.log.system(f"node {self.job_node.node_rank} of {self.job.node_count} claimed by {where}, attempt {self.job_node.attempt}")
            python = self.prepare()
            self.scale()
            outcome = self.execute(python)
        except NodeStopped as stop:
            outcome = ("stopped", str(stop))
        except NodeFailed as failure:
            outcome = ("failed", str(failure))
        except Exception as exc:  # a bug or an outside failure: the run must still end, with a reason
            logger.exception("job %s node %s crashed", self.job.pk, self.job_node.node_rank)
            outcome = ("failed", f"node {self.job_node.node_rank} failed: {type(exc).__name__}: {exc}")
        finally:
            if self.proc is not None and self.proc.poll() is None:
                kill_process_tree(self.proc)
            if self.heartbeat.orphaned.is_set():
                # Our worker is gone: behave like a dead node. The reconciler fails the run.
                self.log.close()
                os._exit(1)
            try:
                self.post_process(outcome)
                self.finish(outcome)
            except Exception:  # e.g. the run was deleted meanwhile: still clean up below
                logger.exception("job %s node %s could not finish", self.job.pk, self.job_node.node_rank)
            self.heartbeat.close()
            self.log.close()
            if self.token is not None:
                self.token.revoke()
            if self.worker is not None:
                self.worker.mark_idle()
            shutil.rmtree(self.work_dir, ignore_errors=True)

    # -- Preparing ------------------------------------------------------------------------------------

    def prepare(self):
        self.job.advance_run(RunStatus.PREPARING)
        self.job_node.set_status(JobNodeStatus.PREPARING)
        if self.work_dir.exists():
            shutil.rmtree(self.work_dir)
        self.work_dir.mkdir(parents=True)
        self.unpack_source()
        entry = (self.work_dir / self.job.entry_script).resolve()
        if not entry.is_relative_to(self.work_dir.resolve()) or not entry.is_file():
            raise NodeFailed(f"entry script {self.job.entry_script!r} is not in the source")
        (self.work_dir / "outputs").mkdir(exist_ok=True)
        (self.work_dir / "logs").mkdir(exist_ok=True)
        python = self.prepare_environment()
        self.copy_checkpoint()
        self.check_still_wanted()
        return python

    def unpack_source(self):
        job = self.job
        if job.source_kind == SourceKind.EXAMPLE:
            src = (EXAMPLES_DIR / job.example_name).resolve()
            if not job.example_name or not src.is_relative_to(EXAMPLES_DIR) or not src.is_dir():
                raise NodeFailed(f"there is no built-in example {job.example_name!r}")
            shutil.copytree(src, self.work_dir, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            self.log.system(f"source: built-in example {job.example_name}")
            return
        from tracker import storage

        try:
            from jobs.source_archive import extract_source
        except ImportError:  # until the archive module exists: a single .py file
            extract_source = None
        with storage.open_blob(job.source_blob_key) as blob:
            if extract_source is not None:
                try:
                    files = extract_source(blob, job.source_filename, self.work_dir)
                except ValidationError as exc:
                    raise NodeFailed(f"the source could not be unpacked: {'; '.join(exc.messages)}") from None
            else:
                name = Path(job.source_filename).name
                if not name.endswith(".py"):
                    raise NodeFailed("only .py sources can be unpacked here")
                with open(self.work_dir / name, "wb") as out:
                    shutil.copyfileobj(blob, out)
                files = [name]
        self.log.system(f"source: {job.source_filename} ({len(files)} files)")

    def prepare_environment(self):
        environment = self.job.environment
        if environment is None:
            return sys.executable
        requirements = Environment.parse_requirements(environment.requirements)
        try:
            return ensure_environment(
                requirements, environment.requirements_hash,
                log=lambda line: self.log.add(line, stream=LogStream.SYSTEM, source="environment"),
                should_stop=self.stop_requested,
            )
        except EnvironmentBuildFailed as exc:
            raise NodeFailed(f"Preparing failed: {exc}") from None
        except EnvironmentBuildStopped:
            self.check_still_wanted()  # raises NodeStopped with the reason
            raise NodeFailed("Preparing failed: the environment build was stopped") from None

    def copy_checkpoint(self):
        artifact = self.job.resume_from
        self.resume_path = None
        if artifact is None:
            return
        from tracker import storage

        target = self.work_dir / "resume" / artifact.name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with storage.open_blob(artifact.storage_key) as blob, open(target, "wb") as out:
                shutil.copyfileobj(blob, out, 1024 * 1024)
        except OSError as exc:
            raise NodeFailed(f"the checkpoint {artifact.path} could not be read: {exc}") from None
        self.resume_path = str(target)
        self.log.system(f"resuming from {artifact.path} of run {artifact.run_id} ({target.name})")

    # -- Scaling --------------------------------------------------------------------------------------

    def scale(self):
        job = self.job
        self.job.advance_run(RunStatus.SCALING)
        self.job_node.set_status(JobNodeStatus.WAITING)
        if job.node_count > 1 and self.job_node.node_rank == 0:
            address = f"{node_address(job.cluster)}:{free_port()}"
            Job.objects.filter(pk=job.pk).update(rendezvous_address=address)
            self.log.system(f"rendezvous at {address}")
        if job.node_count == 1:
            return
        self.log.system(f"waiting for {job.node_count} nodes")
        deadline = time.monotonic() + conf.SCALING_TIMEOUT
        while True:
            self.check_still_wanted()
            claimed = job.nodes.exclude(status=JobNodeStatus.PENDING).count()
            address = Job.objects.filter(pk=job.pk).values_list("rendezvous_address", flat=True).first()
            if claimed >= job.node_count and address:
                job.rendezvous_address = address
                return
            if time.monotonic() > deadline:
                raise NodeFailed(
                    f"only {claimed} of {job.node_count} nodes started within {conf.SCALING_TIMEOUT} s"
                    f" (cluster {job.cluster} has at most {job.cluster.max_nodes if job.cluster else '?'} nodes)"
                )
            time.sleep(0.5)

    # -- Running --------------------------------------------------------------------------------------

    def command(self, python):
        job = self.job
        script = [job.entry_script, *job.script_args]
        if job.backend == Backend.MPI and job.is_distributed:
            if job.node_count > 1:
                raise NodeFailed("mpi jobs run on one node here; use gloo or nccl for several nodes")
            mpirun = shutil.which("mpirun")
            if mpirun is None:
                raise NodeFailed("mpi needs mpirun on the node, and there is none")
            return [mpirun, "-np", str(job.procs_per_node), python, "-u", *script]
        if not job.is_distributed:
            return [python, "-u", *script]
        argv = [python, "-m", "torch.distributed.run", "--nnodes", str(job.node_count),
                "--nproc-per-node", str(job.procs_per_node), "--tee", "3",
                "--log-dir", str(self.work_dir / ".torchrun"), "--log-line-prefix-template", "[rank${rank}]:"]
        if job.node_count == 1:
            argv += ["--standalone"]
        else:
            host, port = job.rendezvous_address.rsplit(":", 1)
            argv += ["--node-rank", str(self.job_node.node_rank), "--master-addr", host, "--master-port", port,
                     "--rdzv-id", str(job.pk)]
        return [*argv, *script]

    def environment(self, python):
        job = self.job
        env = {name: os.environ[name] for name in PASS_THROUGH_ENV if name in os.environ}
        bin_dir = str(Path(python).parent)
        env["PATH"] = os.pathsep.join([bin_dir, "/usr/local/bin", "/usr/bin", "/bin"])
        env.update(job.env_vars or {})
        env.update({
            "PYTHONUNBUFFERED": "1",
            "PYTHONNOUSERSITE": "1",
            "TORCHLIGHT_URL": settings.SITE_URL,
            "TORCHLIGHT_RUN_ID": str(self.run_obj.pk),
            "TORCHLIGHT_EXPERIMENT": self.run_obj.experiment.name,
            "TORCHLIGHT_NODE_RANK": str(self.job_node.node_rank),
            "TORCHLIGHT_NUM_NODES": str(job.node_count),
            "TORCHLIGHT_DIST_BACKEND": job.backend,
        })
        if job.submitted_by is not None:
            self.token, raw = ApiToken.mint(job.submitted_by, f"job {job.pk} node {self.job_node.node_rank}", run=self.run_obj)
            env["TORCHLIGHT_TOKEN"] = raw
            # Scripts written for the mlflow client log into this same run, unchanged.
            env["MLFLOW_TRACKING_URI"] = settings.SITE_URL
            env["MLFLOW_TRACKING_TOKEN"] = raw
            env["MLFLOW_RUN_ID"] = self.run_obj.pk.hex
        gpus = self.worker.gpus if self.worker is not None else ""
        if not job.use_gpu:
            env["CUDA_VISIBLE_DEVICES"] = ""
        elif gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus
        elif "CUDA_VISIBLE_DEVICES" in os.environ:
            env["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"]
        if getattr(self, "resume_path", None):
            env["TORCHLIGHT_RESUME_FROM"] = self.resume_path
        return env

    def execute(self, python):
        job = self.job
        argv = self.command(python)
        env = self.environment(python)
        self.check_still_wanted()
        self.job.advance_run(RunStatus.RUNNING)
        self.job_node.set_status(JobNodeStatus.RUNNING)
        launcher = "torchrun" if job.is_distributed and job.backend != Backend.MPI else Path(argv[0]).name
        self.log.system(f"running {job.entry_script} with {launcher} ({job.world_size} process{'es' if job.world_size > 1 else ''})")
        started = time.monotonic()
        try:
            self.proc = subprocess.Popen(
                argv, cwd=self.work_dir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, start_new_session=True,
            )
        except OSError as exc:
            raise NodeFailed(f"could not start {argv[0]}: {exc}") from None
        JobNode.objects.filter(pk=self.job_node.pk, attempt=self.job_node.attempt).update(process_group=self.proc.pid)
        default_rank = None if job.is_distributed else self.job_node.node_rank * job.procs_per_node
        readers = [
            threading.Thread(target=self._read_stream, args=(self.proc.stdout, LogStream.STDOUT, default_rank), daemon=True),
            threading.Thread(target=self._read_stream, args=(self.proc.stderr, LogStream.STDERR, default_rank), daemon=True),
        ]
        for reader in readers:
            reader.start()
        tailer = LogDirTailer(self.work_dir / "logs", self.log)
        outcome = None
        last_check = 0.0
        while self.proc.poll() is None:
            time.sleep(0.2)
            tailer.poll()
            if self.heartbeat.orphaned.is_set():
                return ("lost", "worker gone")
            now = time.monotonic()
            if job.max_duration_seconds and now - started > job.max_duration_seconds:
                self.log.system(f"stopping: exceeded max run duration of {job.max_duration_seconds} s")
                outcome = ("failed", f"exceeded max run duration of {job.max_duration_seconds} s")
                break
            if now - last_check >= 1.0:
                last_check = now
                try:
                    self.check_still_wanted()
                except NodeStopped as stop:
                    self.log.system(f"stopping: {stop}")
                    outcome = ("stopped", str(stop))
                    break
        if outcome is not None:
            kill_process_tree(self.proc)
        code = self.proc.wait()
        for reader in readers:
            reader.join(timeout=10)
        tailer.poll(final=True)
        self.job_node.exit_code = code
        JobNode.objects.filter(pk=self.job_node.pk, attempt=self.job_node.attempt).update(exit_code=code)
        if outcome is not None:
            return outcome
        if code != 0:
            tail = "\n".join(self.stderr_tail)
            where = f"node {self.job_node.node_rank}: " if job.node_count > 1 else ""
            return ("failed", f"{where}exit code {code}" + (f"\n{tail}" if tail else ""))
        self.log.system(f"{job.entry_script} exited with code 0")
        return ("completed", "")

    def _read_stream(self, pipe, stream, default_rank):
        for raw in iter(pipe.readline, b""):
            # A progress bar redraws with \r: keep what the terminal would show last.
            text = raw.decode("utf-8", errors="replace").rstrip("\r\n").rsplit("\r", 1)[-1]
            rank = default_rank
            match = RANK_PREFIX.match(text)
            if match:
                rank = int(match.group(1))
                text = text[match.end():]
            if stream == LogStream.STDERR:
                self.stderr_tail.append(text if rank is None else f"[rank {rank}] {text}")
            self.log.add(text, stream=stream, rank=rank)
        pipe.close()

    # -- Post-processing and the end ------------------------------------------------------------------

    def post_process(self, outcome):
        kind = outcome[0] if outcome else "failed"
        if not self.job_node.still_mine():
            return  # a stale attempt writes nothing
        outputs = self.work_dir / "outputs"
        if not outputs.is_dir():
            return
        files = sorted(p for p in outputs.rglob("*") if p.is_file() and not p.is_symlink())
        if kind == "completed":
            self.job.advance_run(RunStatus.POST_PROCESSING)
            self.job_node.set_status(JobNodeStatus.POST_PROCESSING)
        if not files:
            return
        from tracker.services import store_artifact

        prefix = "outputs/" if self.job_node.node_rank == 0 else f"outputs/node-{self.job_node.node_rank}/"
        total = 0
        stored = 0
        for path in files:
            relative = path.relative_to(outputs).as_posix()
            size = path.stat().st_size
            if total + size > conf.MAX_OUTPUT_BYTES:
                self.log.system(f"outputs: skipped {relative} and the rest, over {conf.MAX_OUTPUT_BYTES} bytes")
                break
            try:
                with open(path, "rb") as stream:
                    store_artifact(self.run_obj, prefix + relative, stream)
                total += size
                stored += 1
            except Exception as exc:  # one bad file must not lose the others
                self.log.system(f"outputs: could not upload {relative}: {exc}")
        self.log.system(f"outputs: uploaded {stored} file{'s' if stored != 1 else ''} ({total} bytes)")

    def finish(self, outcome):
        kind, reason = outcome or ("failed", "node stopped")
        node = self.job_node
        run = Run.objects.get(pk=self.run_obj.pk)
        if kind == "completed":
            with transaction.atomic():
                Job.objects.select_for_update().filter(pk=self.job.pk).first()
                node.set_status(JobNodeStatus.COMPLETED)
                if not self.job.nodes.exclude(status=JobNodeStatus.COMPLETED).exists():
                    run.finish(RunStatus.COMPLETED)
            return
        canceled = Job.objects.filter(pk=self.job.pk, cancel_requested_at__isnull=False).first()
        if kind == "stopped" and canceled is not None:
            node.set_status(JobNodeStatus.CANCELED, reason="canceled")
            who = f" by {canceled.canceled_by}" if canceled.canceled_by_id else ""
            run.finish(RunStatus.CANCELED, f"canceled{who}")
        elif kind == "stopped":
            node.set_status(JobNodeStatus.CANCELED, reason=reason)  # the run already ended elsewhere
        else:
            if node.set_status(JobNodeStatus.FAILED, reason=reason[:4000]):
                run.finish(RunStatus.FAILED, reason)
        self.log.system(f"node {node.node_rank}: {kind}{': ' + reason.splitlines()[0] if reason else ''}")


class LogDirTailer:
    """Streams files the script writes under ./logs into the run log, line by line."""

    def __init__(self, directory, log):
        self.directory = directory
        self.log = log
        self.offsets = {}
        self.partial = {}
        self.last_scan = 0.0

    def poll(self, final=False):
        now = time.monotonic()
        if not final and now - self.last_scan < 0.5:
            return
        self.last_scan = now
        if not self.directory.is_dir():
            return
        for path in sorted(self.directory.rglob("*")):
            if not path.is_file() or path.is_symlink():
                continue
            name = path.relative_to(self.directory).as_posix()
            offset = self.offsets.get(name, 0)
            try:
                with open(path, "rb") as stream:
                    stream.seek(offset)
                    data = stream.read(4 * 1024 * 1024)
            except OSError:
                continue
            if not data:
                continue
            self.offsets[name] = offset + len(data)
            text = self.partial.pop(name, b"") + data
            lines = text.split(b"\n")
            rest = lines.pop()
            if rest and final:
                lines.append(rest)
            elif rest:
                self.partial[name] = rest
            for line in lines:
                self.log.add(line.decode("utf-8", errors="replace").rstrip("\r"), stream=LogStream.LOG, source=f"logs/{name}")
