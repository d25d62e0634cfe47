"""The job pages' scripts in a real browser: parameter rows, source switch, live log appended as text."""


import pytest

from jobs.models import ComputeCluster, Job, write_log
from tracker.models import Run, RunStatus

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.browser,
    pytest.mark.slow,
]


def test_it_edits_parameter_rows_switches_the_source_and_submits(page, log_in, contributor, workspace, experiment, redis_url):
    cluster = ComputeCluster.objects.create(workspace=workspace, name="cpu", max_nodes=2)
    log_in(contributor)
    page.goto(f"/w/{workspace.slug}/jobs/new")
    rows = page.locator('table[data-rows="script_args"] tr.row-item')
    before = rows.count()
    page.click('[data-add-row="script_args"]')
    assert rows.count() == before + 1
    rows.last.locator('input[name="script_args_name"]').fill("--note")
    rows.last.locator('input[name="script_args_value"]').fill("; rm -rf / <b>x</b>")
    assert page.locator('[data-source="upload"]').is_hidden()
    page.check('input[name="source_kind"][value="upload"]')
    assert page.locator('[data-source="upload"]').is_visible() and page.locator('[data-source="example"]').is_hidden()
    page.check('input[name="source_kind"][value="example"]')
    page.select_option('select[name="example_name"]', "transfer")
    assert page.input_value('input[name="entry_script"]') == "train.py"
    page.select_option('select[name="example_name"]', "digits")
    page.select_option('select[name="cluster"]', str(cluster.pk))
    assert page.locator(".field-new_experiment").is_visible()  # "new experiment" is the default choice
    page.select_option('select[name="experiment"]', str(experiment.pk))
    assert page.locator(".field-new_experiment").is_hidden()
    page.click("[data-submit-once]")
    page.wait_for_url(lambda url: "/runs/" in url)
    job = Job.objects.get()
    assert job.script_args[-2:] == ["--note", "; rm -rf / <b>x</b>"]
    assert page.js_errors == []


def test_it_appends_new_log_lines_as_text_while_the_run_is_live(page, log_in, contributor, workspace, experiment, redis_url):
    from playwright.sync_api import expect

    from jobs.services import submit_job

    cluster = ComputeCluster.objects.create(workspace=workspace, name="cpu", max_nodes=2)
    job = submit_job(user=contributor, experiment=experiment, cluster=cluster, entry_script="train.py",
                     source_kind="example", example_name="digits", node_count=2)
    write_log(job.run_id, [{"node_rank": 0, "rank": 0, "text": "first line"}])
    log_in(contributor)
    page.goto(f"/runs/{job.run_id}/")
    log = page.locator("#job-log")
    log.get_by_text("first line").wait_for()
    write_log(job.run_id, [{"node_rank": 1, "rank": 1, "stream": "stderr", "text": "<img src=x id=injected> second"}])
    log.get_by_text("second").wait_for(timeout=10_000)  # picked up by polling, no reload
    assert page.locator("#injected").count() == 0  # shown as text, never as HTML
    page.select_option("[data-log-node]", "1")
    expect(log).not_to_contain_text("first line")
    expect(log).to_contain_text("[node 1 rank 1] <img src=x id=injected> second")
    Run.objects.get(pk=job.run_id).finish(RunStatus.FAILED, "boom")
    expect(page.locator("[data-job-status]")).to_have_text("Failed")
    expect(page.locator("[data-job-reason]")).to_have_text("boom")
    assert page.locator("[data-cancel-button]").count() == 0
    assert page.js_errors == []
