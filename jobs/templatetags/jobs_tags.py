"""Job panels other apps' pages include (owned by the jobs app)."""

from django import template

register = template.Library()


@register.inclusion_tag("jobs/_run_panel.html", takes_context=True)
def run_job_panel(context, run):
    """Logs, stage details, cancel and clone for a run launched as a job (empty for plain runs)."""
    from jobs.views import run_panel_context

    request = context.get("request")
    return run_panel_context(run, getattr(request, "user", None))


@register.inclusion_tag("jobs/_running_jobs.html")
def running_jobs(workspace):
    """The workspace's jobs that are not finished, for the home page."""
    from jobs.views import live_jobs

    return {"workspace": workspace, "jobs": live_jobs(workspace)}
