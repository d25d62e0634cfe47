"""RQ entry points of the jobs app: ids in, idempotent, failures recorded on the run."""


def run_job_node(job_id, node_rank, attempt):
    """Run one node of a training job (claimed with a conditional update; a second delivery does nothing)."""
    from jobs.node import current_worker_node, execute_job_node

    return execute_job_node(job_id, node_rank, attempt, worker=current_worker_node())


def reconcile():
    """One reconciler pass (lost nodes, lost RQ jobs), for a cron-like RQ schedule."""
    from jobs.reconciler import reconcile as run_reconcile

    return run_reconcile()
