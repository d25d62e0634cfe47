"""Job panels other apps' pages include (owned by the jobs app)."""

from django import template

register = template.Library()


@register.inclusion_tag("jobs/_run_panel.html")
def run_job_panel(run):
    """Logs, stage details, cancel and clone for a run launched as a job (empty for plain runs)."""
    return {"run": run}


@register.inclusion_tag("jobs/_running_jobs.html")
def running_jobs(workspace):
    """The workspace's jobs that are not finished, for the home page."""
    return {"workspace": workspace, "jobs": []}
