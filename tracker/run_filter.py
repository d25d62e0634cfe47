"""The MLflow-style run filter language, parsed by hand (never eval'd).

    metrics.val_loss < 0.3 and params.optimizer = 'adam' and status = 'completed'
    metrics.`val/acc` >= 0.9 and tags.team IN ('vision', 'nlp') and name LIKE 'resnet%'

Conditions are joined by `and`. An identifier is `metrics.<key>` (compares
the last logged value), `params.<key>`, `tags.<key>`, or an attribute:
`attributes.<name>` or the bare name (`status`, `name`/`run_name`,
`run_id`/`id`, `created_by`/`user_id`, and the times `created`,
`start_time`, `end_time` in unix milliseconds, as MLflow has them). Keys
may be back-quoted or double-quoted when they hold other characters.
Operators: `= != < <= > >= LIKE ILIKE IN NOT IN` (`LIKE` is case-sensitive
with `%` and `_` wildcards, `ILIKE` is not). Anything else raises
FilterError naming the problem and where it is.
"""

import math
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from django.db.models import Exists, OuterRef, Q

from tracker.models import MetricSeries, Param, RunStatus, RunTag

MAX_FILTER_LENGTH = 4000
MAX_CONDITIONS = 50


class FilterError(ValueError):
    """The filter text is not valid; the message says what and where."""


@dataclass(frozen=True)
class Token:
    kind: str  # ident, quoted_ident, string, number, op, lparen, rparen, comma, dot
    text: str
    pos: int


_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<op><=|>=|!=|<>|==|=|<|>)
  | (?P<lparen>\()
  | (?P<rparen>\))
  | (?P<comma>,)
  | (?P<string>'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.|"")*")
  | (?P<quoted_ident>`(?:[^`]|``)*`)
  | (?P<number>[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|inf(?:inity)?\b|nan\b))
  | (?P<ident>[A-Za-z_][A-Za-z0-9_\-/:]*)
  | (?P<dot>\.)
    """,
    re.VERBOSE | re.IGNORECASE,
)

_PREFIXES = {
    "metric": "metrics", "metrics": "metrics",
    "param": "params", "params": "params", "parameter": "params", "parameters": "params",
    "tag": "tags", "tags": "tags",
    "attribute": "attributes", "attributes": "attributes", "attr": "attributes", "run": "attributes",
}

_ATTRIBUTES = {
    "status": "status",
    "name": "name", "run_name": "name",
    "run_id": "run_id", "id": "run_id",
    "created_by": "created_by", "user_id": "created_by", "user": "created_by",
    "created": "created_at", "created_at": "created_at",
    "start_time": "start_time", "end_time": "end_time",
}

# MLflow's status names, so filters copied from MLflow keep working.
_STATUS_ALIASES = {
    "finished": RunStatus.COMPLETED, "killed": RunStatus.CANCELED, "scheduled": RunStatus.QUEUED,
    "post-processing": RunStatus.POST_PROCESSING,
}

_NUMERIC_OPS = {"=": "exact", "!=": "exact", "<": "lt", "<=": "lte", ">": "gt", ">=": "gte"}
_STRING_OPS = ("=", "!=", "LIKE", "ILIKE", "IN", "NOT IN")


def _unquote(text):
    quote = text[0]
    body = text[1:-1]
    body = body.replace(quote * 2, quote)
    return re.sub(r"\\(.)", r"\1", body)


def tokenize(text):
    tokens = []
    pos = 0
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if match is None:
            raise FilterError(f"Unexpected character {text[pos]!r} at position {pos + 1}.")
        kind = match.lastgroup
        if kind != "ws":
            tokens.append(Token(kind, match.group(), pos))
        pos = match.end()
    return tokens


@dataclass(frozen=True)
class Condition:
    kind: str  # metrics, params, tags, attributes
    key: str
    op: str
    value: object  # float, str, or a tuple of them for IN


class _Parser:
    def __init__(self, text):
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0

    def peek(self, offset=0):
        j = self.i + offset
        return self.tokens[j] if j < len(self.tokens) else None

    def take(self):
        token = self.peek()
        self.i += 1
        return token

    def where(self, token):
        return f"at position {token.pos + 1}" if token else "at the end"

    def parse(self):
        conditions = [self.condition()]
        while self.peek() is not None:
            token = self.take()
            word = token.text.lower()
            if token.kind == "ident" and word == "and":
                conditions.append(self.condition())
            elif token.kind == "ident" and word == "or":
                raise FilterError(f"OR is not supported ({self.where(token)}): join conditions with AND.")
            else:
                raise FilterError(f"Expected AND between conditions, found {token.text!r} {self.where(token)}.")
            if len(conditions) > MAX_CONDITIONS:
                raise FilterError(f"Too many conditions (at most {MAX_CONDITIONS}).")
        return conditions

    def identifier(self):
        token = self.take()
        if token is None:
            raise FilterError("Expected a condition such as metrics.loss < 0.5 at the end.")
        if token.kind == "quoted_ident":
            name = _unquote(token.text)
            return "attributes", self.attribute(name, token)
        if token.kind != "ident":
            raise FilterError(f"Expected a name like metrics.loss, found {token.text!r} {self.where(token)}.")
        word = token.text
        dot = self.peek()
        if dot is not None and dot.kind == "dot":
            prefix = _PREFIXES.get(word.lower())
            if prefix is None:
                raise FilterError(
                    f"Unknown prefix {word!r} {self.where(token)}: use metrics., params., tags. or attributes."
                )
            self.take()
            key_token = self.take()
            if key_token is None or key_token.kind not in ("ident", "quoted_ident", "string", "number"):
                raise FilterError(f"Expected a key after {word}. {self.where(key_token)}.")
            if key_token.kind == "ident":
                key = key_token.text
                # Plain keys may contain dots: metrics.val.loss is the key "val.loss".
                while self.peek() is not None and self.peek().kind == "dot" and self.peek(1) is not None \
                        and self.peek(1).kind in ("ident", "number") and self.peek(1).pos == self.peek().pos + 1:
                    self.take()
                    key += "." + self.take().text
            elif key_token.kind == "number":
                key = key_token.text
            else:
                key = _unquote(key_token.text)
            if not key:
                raise FilterError(f"Empty key {self.where(key_token)}.")
            if prefix == "attributes":
                return prefix, self.attribute(key, key_token)
            return prefix, key
        return "attributes", self.attribute(word, token)

    def attribute(self, name, token):
        attribute = _ATTRIBUTES.get(name.lower())
        if attribute is None:
            known = ", ".join(sorted({"status", "name", "run_id", "created_by", "created", "start_time", "end_time"}))
            raise FilterError(f"Unknown attribute {name!r} {self.where(token)}; known attributes: {known}.")
        return attribute

    def operator(self):
        token = self.take()
        if token is None:
            raise FilterError("Expected an operator (=, !=, <, <=, >, >=, LIKE, ILIKE, IN) at the end.")
        if token.kind == "op":
            return {"==": "=", "<>": "!="}.get(token.text, token.text)
        word = token.text.upper() if token.kind == "ident" else ""
        if word in ("LIKE", "ILIKE", "IN"):
            return word
        if word == "NOT":
            following = self.take()
            if following is not None and following.kind == "ident" and following.text.upper() == "IN":
                return "NOT IN"
            raise FilterError(f"Expected IN after NOT {self.where(following)}.")
        raise FilterError(f"Expected an operator (=, !=, <, <=, >, >=, LIKE, ILIKE, IN), found {token.text!r} "
                          f"{self.where(token)}.")

    def scalar(self):
        token = self.take()
        if token is None:
            raise FilterError("Expected a value at the end.")
        if token.kind == "string":
            return _unquote(token.text), token
        if token.kind == "number":
            return float(token.text), token
        raise FilterError(f"Expected a number or a quoted string, found {token.text!r} {self.where(token)}.")

    def value(self, op):
        if op in ("IN", "NOT IN"):
            opening = self.take()
            if opening is None or opening.kind != "lparen":
                raise FilterError(f"Expected ( after {op} {self.where(opening)}.")
            values = [self.scalar()[0]]
            while True:
                token = self.take()
                if token is not None and token.kind == "comma":
                    values.append(self.scalar()[0])
                elif token is not None and token.kind == "rparen":
                    return tuple(values)
                else:
                    raise FilterError(f"Expected , or ) in the {op} list {self.where(token)}.")
        return self.scalar()[0]

    def condition(self):
        start = self.peek()
        kind, key = self.identifier()
        op = self.operator()
        value = self.value(op)
        condition = Condition(kind, key, op, value)
        _check(condition, self.where(start))
        return condition


def _check(cond, where):
    values = cond.value if isinstance(cond.value, tuple) else (cond.value,)
    label = f"{cond.kind}.{cond.key}" if cond.kind != "attributes" else cond.key
    numeric_kind = cond.kind == "metrics" or cond.key in ("created_at", "start_time", "end_time")
    if numeric_kind and cond.kind in ("metrics", "attributes"):
        if cond.op not in ("=", "!=", "<", "<=", ">", ">=", "IN", "NOT IN"):
            raise FilterError(f"{label} is a number: use =, !=, <, <=, >, >= or IN, not {cond.op} ({where}).")
        if any(isinstance(v, str) for v in values):
            raise FilterError(f"{label} is compared with a number, not a string ({where}).")
    else:
        if cond.op not in _STRING_OPS:
            raise FilterError(f"{label} is a string: use =, !=, LIKE, ILIKE or IN, not {cond.op} ({where}).")
        if cond.key == "run_id" and cond.op in ("LIKE", "ILIKE"):
            raise FilterError(f"run_id is compared with =, != or IN, not {cond.op} ({where}).")
        if cond.op in ("LIKE", "ILIKE") and not isinstance(cond.value, str):
            raise FilterError(f"{cond.op} needs a quoted pattern such as '%adam%' ({where}).")


def parse(text):
    """The list of Conditions in `text` (empty for blank text); FilterError when invalid."""
    text = (text or "").strip()
    if not text:
        return []
    if len(text) > MAX_FILTER_LENGTH:
        raise FilterError(f"The filter is longer than {MAX_FILTER_LENGTH} characters.")
    return _Parser(text).parse()


def _like_regex(pattern):
    out = []
    for char in pattern:
        if char == "%":
            out.append(".*")
        elif char == "_":
            out.append(".")
        else:
            out.append(re.escape(char))
    return "^" + "".join(out) + "$"


def _as_text(value):
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and not math.isinf(value) else repr(value)
    return value


def _string_q(field, op, value):
    """Q for a string field (a column or a related Param/RunTag value)."""
    if op in ("IN", "NOT IN"):
        q = Q(**{f"{field}__in": [_as_text(v) for v in value]})
    elif op == "LIKE":
        q = Q(**{f"{field}__regex": _like_regex(value)})
    elif op == "ILIKE":
        q = Q(**{f"{field}__iregex": _like_regex(value)})
    else:
        q = Q(**{field: _as_text(value)})
    return q


def _number_q(field, op, value):
    if op in ("IN", "NOT IN"):
        return Q(**{f"{field}__in": list(value)})
    return Q(**{f"{field}__{_NUMERIC_OPS[op]}": value})


def _negates(op):
    return op in ("!=", "NOT IN")


def _status_values(value):
    values = value if isinstance(value, tuple) else (value,)
    out = []
    for v in values:
        name = str(_as_text(v)).strip().lower()
        name = _STATUS_ALIASES.get(name, name.replace(" ", "_"))
        if name not in RunStatus.values:
            raise FilterError(f"Unknown status {v!r}; statuses are: {', '.join(RunStatus.values)}.")
        out.append(name)
    return tuple(out) if isinstance(value, tuple) else out[0]


def _run_ids(value):
    values = value if isinstance(value, tuple) else (value,)
    out = []
    for v in values:
        try:
            out.append(uuid.UUID(str(_as_text(v))))
        except ValueError:
            raise FilterError(f"{v!r} is not a run id (a UUID).")
    return tuple(out) if isinstance(value, tuple) else out[0]


def _millis_to_datetime(value):
    try:
        return datetime.fromtimestamp(value / 1000.0, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise FilterError(f"{value!r} is not a time in unix milliseconds.")


def _key_match(cond):
    """(model, Q over its rows) for a metrics., params. or tags. condition."""
    op = "=" if cond.op == "!=" else ("IN" if cond.op == "NOT IN" else cond.op)
    if cond.kind == "metrics":
        values = cond.value if isinstance(cond.value, tuple) else (cond.value,)
        if any(math.isnan(v) for v in values):
            # NaN is stored as NULL in last_value (with a count); it equals nothing but "is NaN".
            inner = Q(last_value__isnull=True, count__gt=0) if op in ("=", "IN") else Q(pk__in=[])
        else:
            inner = _number_q("last_value", op, cond.value)
        # "!=" means: has the metric and its value differs (MLflow semantics), not "lacks the metric".
        # One series per (run, key), so "has a number that is not inner" says exactly that.
        if _negates(cond.op):
            inner = Q(last_value__isnull=False) & ~inner
        return MetricSeries, inner
    inner = _string_q("value", op, cond.value)
    if _negates(cond.op):
        inner = ~inner  # one row per (run, key) and values are never NULL: "has the key, another value"
    return (Param if cond.kind == "params" else RunTag), inner


def condition_q(cond, experiment=None):
    """A Q over Run for one condition.

    With `experiment`, a metric or param condition is `id IN (one range scan of the
    experiment's series or params)`; without it (runs of several experiments), an
    EXISTS lookup per run. Both select the same runs of that experiment.
    """
    op = "=" if cond.op == "!=" else ("IN" if cond.op == "NOT IN" else cond.op)
    if cond.kind in ("metrics", "params", "tags"):
        model, inner = _key_match(cond)
        if experiment is not None and model is not RunTag:  # tags carry no experiment copy
            return Q(pk__in=_key_rows(cond, experiment))
        return Q(Exists(model.objects.filter(inner, run=OuterRef("pk"), key=cond.key)))
    # attributes
    if cond.key == "status":
        value = _status_values(cond.value) if op in ("=", "IN") else cond.value
        q = _string_q("status", op, value)
    elif cond.key == "name":
        q = _string_q("name", op, cond.value)
    elif cond.key == "created_by":
        q = _string_q("created_by__username", op, cond.value)
    elif cond.key == "run_id":
        q = _string_q("id", op, _run_ids(cond.value))
    else:  # times in unix milliseconds
        values = cond.value if isinstance(cond.value, tuple) else (cond.value,)
        converted = tuple(_millis_to_datetime(v) for v in values)
        q = _number_q(cond.key, op, converted if isinstance(cond.value, tuple) else converted[0])
    return ~q if _negates(cond.op) else q


def _key_rows(cond, experiment):
    """Run ids of `experiment` meeting a metrics. or params. condition: one index range of its rows."""
    model, inner = _key_match(cond)
    return model.objects.filter(inner, experiment=experiment, key=cond.key).values("run_id")


def _keyed(cond):
    return cond.kind in ("metrics", "params")


def matching_run_ids(experiment, conditions):
    """(ids of the runs of `experiment` meeting every metric and param condition, the other conditions).

    The ids are one subquery: the first condition's index range of rows, each
    row's run checked against the next condition's range, and so on (no run table,
    no lookup per run). None when no condition is on a metric or a param.
    """
    keyed = [cond for cond in conditions if _keyed(cond)]
    rest = [cond for cond in conditions if not _keyed(cond)]
    ids = None
    for cond in reversed(keyed):
        rows = _key_rows(cond, experiment)
        ids = rows if ids is None else rows.filter(run_id__in=ids)
    return ids, rest


def apply_filter(runs, text, experiment=None):
    """`runs` narrowed by the filter `text` (unchanged when blank); FilterError when `text` is invalid.

    Pass `experiment` when `runs` are all of that experiment: metric and param
    conditions then read one index range each instead of one lookup per run.
    """
    conditions = parse(text)
    if experiment is not None:
        ids, conditions = matching_run_ids(experiment, conditions)
        if ids is not None:
            runs = runs.filter(pk__in=ids)
    for cond in conditions:
        runs = runs.filter(condition_q(cond, experiment))
    return runs
