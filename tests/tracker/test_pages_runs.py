import io
import json

import pytest
from django.utils import timezone

from tracker import services
from tracker.models import MetricSeries, Param, Run, RunStatus, RunTag

EVIL = "<img src=x onerror=alert(1)>"
ESCAPED = "&lt;img src=x onerror=alert(1)&gt;"
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)


def artifact(run, path, data):
    return services.store_artifact(run, path, io.BytesIO(data))


def body(response):
    return b"".join(response.streaming_content) if response.streaming else response.content


@pytest.mark.django_db
def test_it_shows_the_run_overview_params_tags_and_metric_summary(login, reader, run, make_run):
    now = timezone.now()
    Run.objects.filter(pk=run.pk).update(queued_at=now, preparing_at=now, running_at=now, source_note="git abc123")
    child = make_run(name="resumed", parent_run=run)
    Param.objects.create(run=run, key="lr", value="0.01")
    RunTag.objects.create(run=run, key="team", value="vision")
    MetricSeries.objects.create(run=run, key="loss", last_value=0.25, min_value=0.2, max_value=2.5, count=300)
    MetricSeries.objects.create(run=run, key="val/acc", last_value=None, count=4, nonfinite_count=4)
    response = login(reader).get(f"/runs/{run.id}/")
    assert response.status_code == 200
    html = response.content.decode()
    for text in ("Queued", "Preparing", "git abc123", "resumed", "0.01", "team", "vision", "2.5", "300", "NaN"):
        assert text in html, text
    assert f'href="/runs/{child.id}/"' in html
    # One chart container per key, following the chart contract.
    assert html.count('class="metric-chart chart"') == 2
    assert 'data-key="val/acc"' in html
    assert "plotly/plotly.min.js" in html and "js/charts.js" in html


@pytest.mark.django_db
def test_it_renders_chart_containers_with_the_series_contract(login, owner, run):
    MetricSeries.objects.create(run=run, key="loss", last_value=1.0, count=1)
    html = login(owner).get(f"/runs/{run.id}/").content.decode()
    import html as htmlmod
    import re

    raw = re.search(r'data-key="loss" data-series="([^"]+)"', html).group(1)
    series = json.loads(htmlmod.unescape(raw))
    assert series == [{"label": "run-1", "url": f"/runs/{run.id}/metrics/loss.json", "live": True}]


@pytest.mark.django_db
def test_it_shows_progress_with_an_eta_for_a_live_run(login, owner, run):
    run.move_to(RunStatus.RUNNING)
    run.running_at = timezone.now() - timezone.timedelta(minutes=10)
    run.save(update_fields=["running_at"])
    run.set_progress(50, 100)
    html = login(owner).get(f"/runs/{run.id}/").content.decode()
    assert "50%" in html and "left" in html


@pytest.mark.django_db
def test_it_lets_contributors_add_change_and_delete_tags(login, contributor, run):
    client = login(contributor)
    assert client.post(f"/runs/{run.id}/tags/", {"key": "stage", "value": "dev"}).status_code == 302
    assert RunTag.objects.get(run=run, key="stage").value == "dev"
    client.post(f"/runs/{run.id}/tags/", {"key": "stage", "value": "prod"})
    assert RunTag.objects.get(run=run, key="stage").value == "prod"
    html = client.get(f"/runs/{run.id}/").content.decode()
    assert "Add tag" in html
    assert client.post(f"/runs/{run.id}/tags/delete/", {"key": "stage"}).status_code == 302
    assert not RunTag.objects.filter(run=run).exists()


@pytest.mark.django_db
def test_it_refuses_a_tag_without_a_key_and_keeps_existing_tags(login, contributor, run):
    RunTag.objects.create(run=run, key="keep", value="me")
    client = login(contributor)
    response = client.post(f"/runs/{run.id}/tags/", {"key": "  ", "value": "x"}, follow=True)
    assert "Tag not saved" in response.content.decode()
    response = client.post(f"/runs/{run.id}/tags/", {"key": "k" * 251, "value": "x"}, follow=True)
    assert "Tag not saved" in response.content.decode()
    assert list(RunTag.objects.filter(run=run).values_list("key", "value")) == [("keep", "me")]


@pytest.mark.django_db
def test_it_forbids_readers_to_edit_tags_and_hides_controls(login, reader, run):
    RunTag.objects.create(run=run, key="keep", value="me")
    client = login(reader)
    html = client.get(f"/runs/{run.id}/").content.decode()
    assert "Add tag" not in html and "tags/delete" not in html
    assert client.post(f"/runs/{run.id}/tags/", {"key": "x", "value": "y"}).status_code == 403
    assert client.post(f"/runs/{run.id}/tags/delete/", {"key": "keep"}).status_code == 403
    assert list(RunTag.objects.filter(run=run).values_list("key", flat=True)) == ["keep"]


@pytest.mark.django_db
def test_it_gives_outsiders_404_on_run_pages(login, outsider, run):
    a = artifact(run, "notes.txt", b"hello")
    client = login(outsider)
    for url in [f"/runs/{run.id}/", f"/runs/{run.id}/artifacts/", f"/runs/{run.id}/artifacts/{a.pk}/download",
                f"/runs/{run.id}/artifacts/{a.pk}/raw"]:
        assert client.get(url).status_code == 404, url
    assert client.post(f"/runs/{run.id}/tags/", {"key": "x", "value": "y"}).status_code == 404
    assert client.get("/runs/00000000-0000-0000-0000-000000000000/").status_code == 404


@pytest.mark.django_db
def test_it_browses_artifacts_as_a_folder_tree(login, owner, run):
    artifact(run, "outputs/model/weights.pt", b"\x00\x01binary")
    artifact(run, "outputs/log.txt", b"epoch 1\nepoch 2\n")
    artifact(run, "config.json", b'{"b": 1, "a": [1, 2]}')
    html = login(owner).get(f"/runs/{run.id}/artifacts/").content.decode()
    assert "outputs/</span>" in html and "model/</span>" in html
    assert "weights.pt" in html and "log.txt" in html and "config.json" in html
    assert "padding-left: 36px" in html  # outputs/model/weights.pt sits two folders deep


@pytest.mark.django_db
def test_it_previews_text_json_and_csv_heads(login, owner, run):
    artifact(run, "train.log", b"line one\n<script>alert(1)</script>\n")
    artifact(run, "cfg.json", b'{"lr": 0.1, "layers": [1, 2]}')
    rows = "\n".join(f"{i},{i * i}" for i in range(500))
    artifact(run, "data/table.csv", f"step,value\n{rows}\n".encode())
    client = login(owner)
    html = client.get(f"/runs/{run.id}/artifacts/?path=train.log").content.decode()
    assert "line one" in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    html = client.get(f"/runs/{run.id}/artifacts/?path=cfg.json").content.decode()
    assert '&quot;layers&quot;: [\n    1,' in html
    html = client.get(f"/runs/{run.id}/artifacts/?path=data/table.csv").content.decode()
    assert "<th>step</th>" in html and "<td>49</td>" in html and "<td>50</td>" not in html
    assert "first rows only" in html


@pytest.mark.django_db
def test_it_reads_only_the_head_of_a_big_text_file(login, owner, run):
    big = b"".join(f"line {i:08d}\n".encode() for i in range(20000))  # ~280 KB
    artifact(run, "big.log", big)
    html = login(owner).get(f"/runs/{run.id}/artifacts/?path=big.log").content.decode()
    assert "line 00000000" in html and "line 00019999" not in html
    assert "first 64 KB" in html


@pytest.mark.django_db
def test_it_previews_images_via_the_raw_url_with_nosniff(login, owner, run):
    png = artifact(run, "plots/curve.png", PNG)
    client = login(owner)
    html = client.get(f"/runs/{run.id}/artifacts/?path=plots/curve.png").content.decode()
    assert f'<img class="artifact-image" src="/runs/{run.id}/artifacts/{png.pk}/raw"' in html
    response = client.get(f"/runs/{run.id}/artifacts/{png.pk}/raw")
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert body(response) == PNG


@pytest.mark.django_db
def test_it_never_renders_html_or_svg_inline(login, owner, run):
    page = artifact(run, "report.html", b"<script>alert(1)</script>")
    svg = artifact(run, "plot.svg", b"<svg onload=alert(1)></svg>")
    client = login(owner)
    html = client.get(f"/runs/{run.id}/artifacts/?path=report.html").content.decode()
    assert "never shown inline" in html and "alert(1)" not in html
    for item in (page, svg):
        assert client.get(f"/runs/{run.id}/artifacts/{item.pk}/raw").status_code == 404
        response = client.get(f"/runs/{run.id}/artifacts/{item.pk}/download")
        assert response["Content-Disposition"].startswith("attachment")
        assert response["Content-Type"] == "application/octet-stream"
        assert response["X-Content-Type-Options"] == "nosniff"


@pytest.mark.django_db
def test_it_streams_downloads_as_attachments(login, reader, run):
    data = b"x" * 300_000
    item = artifact(run, "outputs/weights.bin", data)
    response = login(reader).get(f"/runs/{run.id}/artifacts/{item.pk}/download")
    assert response.status_code == 200 and response.streaming
    assert response["Content-Disposition"] == 'attachment; filename="weights.bin"'
    assert response["X-Content-Type-Options"] == "nosniff"
    assert body(response) == data


@pytest.mark.django_db
def test_it_treats_the_path_parameter_as_a_lookup_never_a_file_path(login, owner, run, make_run):
    other_run = make_run(name="other")
    artifact(other_run, "secret.txt", b"other run's secret")
    client = login(owner)
    for path in ["../../etc/passwd", "/etc/passwd", "secret.txt", "..%2F..%2Fsettings.py"]:
        assert client.get(f"/runs/{run.id}/artifacts/", {"path": path}).status_code == 404
    # An artifact id of another run is not served through this run's URL.
    item = other_run.artifacts.get()
    assert client.get(f"/runs/{run.id}/artifacts/{item.pk}/download").status_code == 404


@pytest.mark.django_db
def test_it_says_binary_files_have_no_preview(login, owner, run):
    artifact(run, "weights.pt", b"\x80\x02\x00binary")
    html = login(owner).get(f"/runs/{run.id}/artifacts/?path=weights.pt").content.decode()
    assert "No preview" in html or "Binary" in html


@pytest.mark.django_db
def test_it_escapes_html_in_run_page_names(login, owner, experiment, workspace):
    run = Run.objects.create(experiment=experiment, name=EVIL, created_by=owner, source_note=EVIL,
                             status=RunStatus.FAILED, status_reason=EVIL)
    Param.objects.create(run=run, key=EVIL, value=EVIL)
    RunTag.objects.create(run=run, key=EVIL, value=EVIL)
    MetricSeries.objects.create(run=run, key=EVIL, last_value=1.0, count=1)
    artifact(run, f"dir{EVIL}/file.txt", EVIL.encode())
    client = login(owner)
    for url in [f"/runs/{run.id}/", f"/runs/{run.id}/artifacts/",
                f"/runs/{run.id}/artifacts/?path=dir{EVIL}/file.txt"]:
        html = client.get(url).content.decode()
        assert EVIL not in html, url
        assert ESCAPED in html, url
