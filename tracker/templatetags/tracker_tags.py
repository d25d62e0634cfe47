"""Formatting for tracking pages: durations, metric values, query-string links."""

import math
from datetime import timedelta

from django import template

register = template.Library()


@register.filter
def duration(value):
    """A timedelta as '3h 04m', '2m 05s', '12.3s'; '—' when unknown."""
    if value is None:
        return "—"
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    else:
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            return "—"
    if seconds < 0:
        seconds = 0
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{int(seconds)}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s"


@register.filter
def metric(value):
    """A metric value with about 5 significant digits; NaN/±Inf spelled out, missing as '—'."""
    if value is None or value == "":
        return "—"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "Infinity" if number > 0 else "-Infinity"
    if number == 0:
        return "0"
    if number.is_integer() and abs(number) < 1e15:
        return str(int(number))
    magnitude = abs(number)
    if magnitude >= 1e6 or magnitude < 1e-4:
        return f"{number:.4e}"
    return f"{number:.5g}"


@register.filter
def percent(fraction):
    if fraction is None:
        return ""
    return f"{fraction * 100:.0f}"


@register.simple_tag(takes_context=True)
def query(context, **changes):
    """The current query string with `changes` applied (None or '' removes a key); starts with '?'."""
    params = context["request"].GET.copy()
    for key, value in changes.items():
        if value is None or value == "":
            params.pop(key, None)
        else:
            params[key] = value
    encoded = params.urlencode()
    return f"?{encoded}" if encoded else "?"


@register.filter
def get_item(mapping, key):
    return mapping.get(key) if mapping else None


@register.filter
def sort_link(table, value):
    """The ?sort= value a runs-table header should link to (flips when already sorted by it)."""
    return table.sort_link(value)
