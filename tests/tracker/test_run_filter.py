import pytest

from tracker.models import MetricSeries, Param, Run, RunStatus, RunTag
from tracker.run_filter import FilterError, apply_filter, parse


def metric(run, key, value, count=1):
    MetricSeries.objects.create(run=run, key=key, last_value=value, count=count, min_value=value, max_value=value)


@pytest.fixture
def runs(make_run, contributor):
    a = make_run(name="resnet-a", status=RunStatus.COMPLETED)
    b = make_run(name="resnet-b", status=RunStatus.FAILED, created_by=contributor)
    c = make_run(name="ViT-c", status=RunStatus.RUNNING)
    metric(a, "val_loss", 0.2)
    metric(b, "val_loss", 0.5)
    metric(c, "val_loss", None, count=3)  # NaN
    metric(a, "val/acc", 0.91)
    metric(b, "val/acc", 0.80)
    Param.objects.create(run=a, key="optimizer", value="adam")
    Param.objects.create(run=b, key="optimizer", value="sgd")
    Param.objects.create(run=a, key="lr", value="0.01")
    RunTag.objects.create(run=a, key="team", value="vision")
    RunTag.objects.create(run=c, key="team", value="nlp")
    return a, b, c


def names(text, experiment):
    """Names matching `text`, checked to be the same through both forms of the filter."""
    runs = Run.objects.for_experiment(experiment)
    per_run = sorted(apply_filter(runs, text).values_list("name", flat=True))  # EXISTS per run
    ranged = sorted(apply_filter(runs, text, experiment=experiment).values_list("name", flat=True))  # IN (range)
    assert per_run == ranged, text
    return ranged


@pytest.mark.django_db
def test_it_filters_on_metrics_params_tags_and_attributes(runs, experiment):
    assert names("metrics.val_loss < 0.3", experiment) == ["resnet-a"]
    assert names("metrics.val_loss >= 0.2 and params.optimizer = 'sgd'", experiment) == ["resnet-b"]
    assert names("metrics.`val/acc` > 0.85", experiment) == ["resnet-a"]
    assert names('params.optimizer != "adam"', experiment) == ["resnet-b"]
    assert names("tags.team IN ('vision', 'nlp')", experiment) == ["ViT-c", "resnet-a"]
    assert names("attributes.status = 'completed'", experiment) == ["resnet-a"]
    assert names("status = 'FINISHED'", experiment) == ["resnet-a"]
    assert names("status != 'completed'", experiment) == ["ViT-c", "resnet-b"]
    assert names("name LIKE 'resnet%'", experiment) == ["resnet-a", "resnet-b"]
    assert names("name LIKE 'vit%'", experiment) == []
    assert names("name ILIKE 'vit%'", experiment) == ["ViT-c"]
    assert names("created_by = 'carl'", experiment) == ["resnet-b"]
    assert names("params.lr = 0.01", experiment) == ["resnet-a"]
    assert names("", experiment) == ["ViT-c", "resnet-a", "resnet-b"]
    assert names("  STATUS IN ('failed','running')  AND name NOT IN ('ViT-c')", experiment) == ["resnet-b"]


@pytest.mark.django_db
def test_it_treats_nan_as_a_value_that_matches_no_comparison(runs, experiment):
    assert names("metrics.val_loss > -1000", experiment) == ["resnet-a", "resnet-b"]
    assert names("metrics.val_loss = NaN", experiment) == ["ViT-c"]


@pytest.mark.django_db
def test_it_filters_by_run_id(runs, experiment):
    a = runs[0]
    assert names(f"run_id = '{a.id}'", experiment) == ["resnet-a"]
    assert names(f"attributes.run_id IN ('{a.id}', '{runs[1].id}')", experiment) == ["resnet-a", "resnet-b"]


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("metrics.loss <", "Expected a value"),
        ("metrics.loss < 'abc'", "number"),
        ("params.lr < 0.1", "is a string"),
        ("bogus.x = 1", "Unknown prefix"),
        ("colour = 'red'", "Unknown attribute"),
        ("metrics.loss = 1 or metrics.loss = 2", "OR is not supported"),
        ("metrics.loss = 1 metrics.acc = 2", "Expected AND"),
        ("metrics.loss ~ 1", "Unexpected character"),
        ("status = 'sleeping'", "Unknown status"),
        ("run_id = 'not-a-uuid'", "not a run id"),
        ("tags.x IN ('a', 'b'", "Expected , or )"),
        ("tags.x IN 'a'", "Expected ("),
        ("name LIKE 3", "quoted pattern"),
        ("__import__('os').system('true')", "Unknown attribute"),
        ("metrics.", "Expected a key"),
        ("x" * 5000, "longer than"),
    ],
)
@pytest.mark.django_db
def test_it_rejects_junk_with_a_message_naming_the_problem(text, fragment, experiment):
    with pytest.raises(FilterError) as excinfo:
        list(apply_filter(Run.objects.for_experiment(experiment), text))
    assert fragment in str(excinfo.value)


def test_it_parses_dotted_and_quoted_keys_without_a_database():
    (cond,) = parse("metrics.val.loss <= 1e-3")
    assert (cond.kind, cond.key, cond.op, cond.value) == ("metrics", "val.loss", "<=", 0.001)
    (cond,) = parse('params."batch size" = \'64\'')
    assert (cond.kind, cond.key, cond.value) == ("params", "batch size", "64")
    (cond,) = parse("tags.`it``s` = 'x'")
    assert cond.key == "it`s"


@pytest.mark.django_db
def test_it_keeps_negations_and_other_experiments_apart(runs, experiment, workspace, owner):
    from tracker.models import Experiment

    other = Experiment.objects.create(workspace=workspace, name="other", created_by=owner)
    stranger = Run.objects.create(experiment=other, name="resnet-other", created_by=owner)
    metric(stranger, "val_loss", 0.1)
    Param.objects.create(run=stranger, key="optimizer", value="sgd")
    # "!=" and NOT IN: has the key and differs; runs lacking the key or holding NaN are left out.
    assert names("metrics.val_loss != 0.2", experiment) == ["resnet-b"]
    assert names("metrics.val_loss NOT IN (0.2, 0.7)", experiment) == ["resnet-b"]
    assert names("metrics.val_loss != NaN", experiment) == ["resnet-a", "resnet-b"]
    assert names("params.optimizer != 'adam'", experiment) == ["resnet-b"]
    assert names("params.optimizer NOT IN ('sgd')", experiment) == ["resnet-a"]
    assert names("params.optimizer LIKE 'a%' and metrics.`val/acc` >= 0.9", experiment) == ["resnet-a"]
    assert names("tags.team != 'nlp'", experiment) == ["resnet-a"]
    # The other experiment's matching run never leaks in, and its own filter sees only it.
    assert names("metrics.val_loss < 0.3", experiment) == ["resnet-a"]
    assert names("metrics.val_loss < 0.3 and params.optimizer = 'sgd'", other) == ["resnet-other"]
