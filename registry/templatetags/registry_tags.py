"""Registry panels other apps' pages include (owned by the registry app)."""

from django import template

register = template.Library()


@register.inclusion_tag("registry/_run_panel.html")
def run_register_panel(run):
    """"Register model" from this run's outputs."""
    return {"run": run}


@register.inclusion_tag("registry/_recent_models.html")
def recent_models(workspace):
    """The workspace's recently registered model versions, for the home page."""
    return {"workspace": workspace, "versions": []}
