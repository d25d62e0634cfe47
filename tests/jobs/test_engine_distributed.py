"""torchrun jobs with gloo on CPU: 2 processes on one node, and 2 nodes (two workers on this machine)."""

import pytest
from conftest import wait_for

from jobs.models import JobNode, JobNodeStatus, read_log
from tracker.models import Run, RunStatus

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

ALL_REDUCE = (
    "import os\n"
    "import torch, torch.distributed as dist\n"
    "dist.init_process_group(os.environ['TORCHLIGHT_DIST_BACKEND'])\n"
    "rank, world = dist.get_rank(), dist.get_world_size()\n"
    "t = torch.tensor([float(rank + 1)])\n"
    "dist.all_reduce(t)\n"
    "print(f'rank {rank} of {world}: sum {t.item():.0f}', flush=True)\n"
    "if rank == 0:\n"
    "    os.makedirs('outputs', exist_ok=True)\n"
    "    open('outputs/result.txt', 'w').write(str(t.item()))\n"
    "dist.destroy_process_group()\n"
)


def test_it_runs_a_two_process_gloo_job_with_torchrun(submit_script, cluster, run_burst_worker, redis_conn):
    job = submit_script(ALL_REDUCE, procs_per_node=2, backend="gloo")
    result = run_burst_worker(cluster, timeout=180)
    assert result.returncode == 0, result.stderr
    run = Run.objects.get(pk=job.run.pk)
    assert run.status == RunStatus.COMPLETED, run.status_reason
    lines = read_log(run, 0, 10000)[0]
    by_rank = {line.rank: line.text for line in lines if line.text.startswith("rank ")}
    assert by_rank == {0: "rank 0 of 2: sum 3", 1: "rank 1 of 2: sum 3"}
    assert run.artifacts.filter(path="outputs/result.txt").exists()


def test_it_runs_a_two_node_gloo_job_on_two_workers(submit_script, cluster, start_worker, redis_conn):
    start_worker(cluster)
    start_worker(cluster)
    job = submit_script(ALL_REDUCE, node_count=2, procs_per_node=1, backend="gloo")
    wait_for(lambda: Run.objects.get(pk=job.run.pk).is_terminal, timeout=150, message="the run to end")
    run = Run.objects.get(pk=job.run.pk)
    assert run.status == RunStatus.COMPLETED, run.status_reason
    assert run.scaling_at is not None
    nodes = list(JobNode.objects.filter(job=job).order_by("node_rank"))
    assert [n.status for n in nodes] == [JobNodeStatus.COMPLETED] * 2
    assert nodes[0].worker_id != nodes[1].worker_id
    lines = read_log(run, 0, 10000)[0]
    seen = {(line.node_rank, line.rank, line.text) for line in lines if line.text.startswith("rank ")}
    assert seen == {(0, 0, "rank 0 of 2: sum 3"), (1, 1, "rank 1 of 2: sum 3")}
