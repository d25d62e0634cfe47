"""Pages for launching jobs, clusters and environments, and the JSON the run page's log viewer polls."""

from datetime import timedelta

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count, Max, OuterRef, Q, Subquery, UUIDField
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from jobs import conf
from jobs.examples import EXAMPLES, get_example
from jobs.forms import ClusterForm, EnvironmentForm, JobLaunchForm, clone_initial
from jobs.models import ClusterNode, ComputeCluster, Environment, Job, JobNode, NodeStatus, read_log
from tracker.access import get_run_for_user, get_workspace_for_user, require_role
from tracker.models import Role

RECENT_RUNS = 20


def _clone_source(request, workspace):
    """The job to clone from ?clone=<run id>, or None; 404 for a run outside the workspace or without a job."""
    run_id = request.GET.get("clone")
    if not run_id:
        return None
    run = get_run_for_user(request.user, run_id)
    job = Job.objects.select_related("run__experiment__workspace").filter(run=run).first()
    if job is None or run.experiment.workspace_id != workspace.pk:
        raise Http404
    return job


@login_required
def job_new(request, slug):
    workspace = get_workspace_for_user(request.user, slug, Role.CONTRIBUTOR)
    clone_from = None
    kept_source = None
    if request.method == "POST":
        form = JobLaunchForm(request.POST, request.FILES, workspace=workspace, user=request.user)
        if form.is_valid():
            job = form.launch()
            if job is not None:
                messages.success(request, f"Run {job.run.display_name} is queued on {job.cluster}.")
                return redirect("tracker:run-detail", run_id=job.run_id)
        kept_source = form.keep_uploaded_source()
    else:
        clone_from = _clone_source(request, workspace)
        initial = clone_initial(clone_from, request.user) if clone_from else {}
        if not clone_from and request.GET.get("experiment", "").isdigit():
            initial["experiment"] = int(request.GET["experiment"])
        if not clone_from:
            example = get_example("digits")
            initial.setdefault("script_args", example.default_params)
        form = JobLaunchForm(initial=initial, workspace=workspace, user=request.user)
    context = {
        "workspace": workspace,
        "form": form,
        "clone_from": clone_from,
        "examples": EXAMPLES.values(),
        "source_filename": kept_source[1] if kept_source else form.initial.get("source_filename", ""),
        "kept_source_id": kept_source[0] if kept_source else "",
        "has_clusters": form.fields["cluster"].queryset.exists(),
    }
    return render(request, "jobs/job_form.html", context, status=400 if form.is_bound and form.errors else 200)


@login_required
def example_download(request, name):
    example = get_example(name)
    if example is None:
        raise Http404
    response = HttpResponse(example.as_zip(), content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="{example.name}.zip"'
    return response


@login_required
@require_POST
def job_cancel(request, run_id):
    from jobs.services import cancel_job

    run = get_run_for_user(request.user, run_id, Role.CONTRIBUTOR)
    job = Job.objects.filter(run=run).first()
    if job is None:
        raise Http404
    if cancel_job(job, user=request.user):
        messages.success(request, f"Canceling {run.display_name}: its processes are being stopped.")
    else:
        messages.info(request, f"{run.display_name} had already finished ({run.get_status_display()}).")
    return redirect("tracker:run-detail", run_id=run.pk)


def _int_or_none(value):
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


@login_required
def run_logs_json(request, run_id):
    """New log lines after ?after=<offset> (optionally one ?node= / ?rank=), with the run's status for the viewer."""
    run = get_run_for_user(request.user, run_id)
    after = _int_or_none(request.GET.get("after")) or 0
    if after < 0:
        return JsonResponse({"error": {"code": "bad_offset", "message": "after must be a non-negative offset"}}, status=400)
    limit = min(_int_or_none(request.GET.get("limit")) or 1000, 5000)
    lines, next_offset = read_log(
        run, after_offset=after, limit=limit,
        node_rank=_int_or_none(request.GET.get("node")), rank=_int_or_none(request.GET.get("rank")),
    )
    payload = {
        "lines": [line.as_dict() for line in lines],
        "next_offset": next_offset,
        "more": len(lines) >= limit,
        "status": run.status,
        "status_display": run.get_status_display(),
        "status_reason": run.status_reason,
        "live": run.is_live,
        "progress": run.progress_fraction,
        "eta_seconds": run.progress_eta.total_seconds() if run.progress_eta else None,
    }
    response = JsonResponse(payload)
    response["Cache-Control"] = "no-store"
    return response


def _node_counts(queryset):
    stale = timezone.now() - timedelta(seconds=conf.NODE_LOST_SECONDS)
    alive = Q(nodes__status__in=[NodeStatus.IDLE, NodeStatus.BUSY], nodes__last_heartbeat__gte=stale)
    return queryset.annotate(
        busy_count=Count("nodes", filter=alive & Q(nodes__status=NodeStatus.BUSY), distinct=True),
        idle_count=Count("nodes", filter=alive & Q(nodes__status=NodeStatus.IDLE), distinct=True),
        unreachable_count=Count(
            "nodes",
            filter=Q(nodes__status=NodeStatus.UNREACHABLE)
            | Q(nodes__status__in=[NodeStatus.IDLE, NodeStatus.BUSY], nodes__last_heartbeat__lt=stale),
            distinct=True,
        ),
    )


def _queue_depths(clusters):
    """{cluster pk: queued RQ jobs or None}: one Redis connection, 'queue unavailable' instead of a 500."""
    import redis
    from rq import Queue

    from config.redis import get_connection

    depths = {}
    try:
        connection = get_connection()
        for cluster in clusters:
            depths[cluster.pk] = Queue(cluster.queue_name, connection=connection).count
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
        return dict.fromkeys((c.pk for c in clusters), None)
    return depths


@login_required
def cluster_list(request, slug):
    workspace = get_workspace_for_user(request.user, slug)
    clusters = list(_node_counts(ComputeCluster.objects.filter(workspace=workspace)).order_by("name"))
    depths = _queue_depths(clusters)
    for cluster in clusters:
        cluster.depth = depths.get(cluster.pk)
    membership = require_role(request.user, workspace)
    context = {
        "workspace": workspace,
        "clusters": clusters,
        "can_launch": membership.allows(Role.CONTRIBUTOR),
        "can_manage": membership.allows(Role.OWNER),
    }
    return render(request, "jobs/cluster_list.html", context)


@login_required
def cluster_new(request, slug):
    workspace = get_workspace_for_user(request.user, slug, Role.OWNER)
    form = ClusterForm(request.POST or None, workspace=workspace)
    if request.method == "POST" and form.is_valid():
        cluster = form.save()
        messages.success(request, f"Cluster {cluster.name} created: its queue is {cluster.queue_name}.")
        return redirect("jobs:cluster-detail", slug=workspace.slug, pk=cluster.pk)
    return render(request, "jobs/cluster_form.html", {"workspace": workspace, "form": form},
                  status=400 if form.is_bound and form.errors else 200)


def _get_cluster(request, slug, pk, min_role=Role.READER):
    workspace = get_workspace_for_user(request.user, slug, min_role)
    return workspace, get_object_or_404(ComputeCluster, workspace=workspace, pk=pk)


@login_required
def cluster_edit(request, slug, pk):
    workspace, cluster = _get_cluster(request, slug, pk, Role.OWNER)
    form = ClusterForm(request.POST or None, instance=cluster, workspace=workspace)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, f"Cluster {cluster.name} saved.")
        return redirect("jobs:cluster-detail", slug=workspace.slug, pk=cluster.pk)
    return render(request, "jobs/cluster_form.html", {"workspace": workspace, "form": form, "cluster": cluster},
                  status=400 if form.is_bound and form.errors else 200)


@login_required
def cluster_detail(request, slug, pk):
    workspace, cluster = _get_cluster(request, slug, pk)
    stale = timezone.now() - timedelta(seconds=conf.NODE_LOST_SECONDS)
    nodes = list(
        ClusterNode.objects.filter(cluster=cluster)
        .exclude(status=NodeStatus.STOPPED, stopped_at__lt=timezone.now() - timedelta(hours=1))
        .select_related("current_job__run")
        .order_by("-started_at")[:100]
    )
    for node in nodes:
        node.shown_status = (
            NodeStatus.UNREACHABLE if node.status in (NodeStatus.IDLE, NodeStatus.BUSY) and node.last_heartbeat < stale
            else node.status
        )
    jobs = list(
        Job.objects.filter(cluster=cluster)
        .select_related("run__experiment", "submitted_by")
        .order_by("-created_at")[:RECENT_RUNS]
    )
    context = {
        "workspace": workspace,
        "cluster": cluster,
        "nodes": nodes,
        "jobs": jobs,
        "queue_depth": _queue_depths([cluster])[cluster.pk],
        "waiting_nodes": cluster.waiting_node_count(),
        "can_edit": require_role(request.user, workspace).allows(Role.OWNER),
        "worker_command": f"python manage.py worker --cluster {cluster.name} --workspace {workspace.slug}",
    }
    return render(request, "jobs/cluster_detail.html", context)


@login_required
def environment_list(request, slug):
    workspace = get_workspace_for_user(request.user, slug)
    from jobs.environments import environments_root

    last_run = Job.objects.filter(environment=OuterRef("pk")).order_by("-created_at").values("run_id")[:1]
    environments = list(
        Environment.objects.filter(workspace=workspace)
        .select_related("created_by")
        .annotate(job_count=Count("jobs"), last_used=Max("jobs__created_at"), last_run_id=Subquery(last_run, output_field=UUIDField()))
        .order_by("name")
    )
    root = environments_root()
    for environment in environments:
        # Built on this machine (local nodes share the data dir); external nodes keep their own cache.
        environment.built_here = (root / environment.requirements_hash / ".ready").exists()
    can_edit = require_role(request.user, workspace).allows(Role.CONTRIBUTOR)
    return render(request, "jobs/environment_list.html",
                  {"workspace": workspace, "environments": environments, "can_edit": can_edit})


@login_required
def environment_new(request, slug):
    workspace = get_workspace_for_user(request.user, slug, Role.CONTRIBUTOR)
    form = EnvironmentForm(request.POST or None, workspace=workspace, user=request.user)
    if request.method == "POST" and form.is_valid():
        environment = form.save()
        messages.success(request, f"Environment {environment.name} saved; it is built the first time a job uses it.")
        return redirect("jobs:environment-list", slug=workspace.slug)
    return render(request, "jobs/environment_form.html", {"workspace": workspace, "form": form},
                  status=400 if form.is_bound and form.errors else 200)


def run_panel_context(run, user=None):
    """What the run page's job panel shows (used by the `run_job_panel` tag)."""
    job = (
        Job.objects.select_related("cluster", "environment", "resume_from__run", "submitted_by")
        .filter(run_id=run.pk)
        .first()
    )
    if job is None:
        return {"run": run, "job": None}
    nodes = list(JobNode.objects.filter(job=job).select_related("worker").order_by("node_rank"))
    context = {
        "run": run,
        "job": job,
        "nodes": nodes,
        "logs_url": reverse("jobs:run-logs", args=[run.pk]),
        "clone_url": reverse("jobs:job-new", args=[run.experiment.workspace.slug]) + f"?clone={run.pk}",
        "can_edit": False,
    }
    if user is not None and user.is_authenticated:
        membership = run.experiment.workspace.memberships.filter(user=user).first()
        context["can_edit"] = bool(membership and membership.allows(Role.CONTRIBUTOR))
    return context


def live_jobs(workspace, limit=20):
    return list(
        Job.objects.for_workspace(workspace).live()
        .select_related("run__experiment", "cluster")
        .order_by("-created_at")[:limit]
    )

