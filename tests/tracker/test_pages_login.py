import pytest

from tests.conftest import PASSWORD


@pytest.mark.django_db
def test_it_logs_in_through_the_form_and_lands_on_the_workspace(client, owner, workspace, redis_url):
    response = client.post("/login/", {"username": "olivia", "password": PASSWORD}, follow=True)
    assert response.redirect_chain[-1][0] == "/w/vision/"
    assert "Vision team" in response.content.decode()


@pytest.mark.django_db
def test_it_shows_a_clear_error_for_a_wrong_password(client, owner, redis_url):
    response = client.post("/login/", {"username": "olivia", "password": "wrong"})
    assert response.status_code == 200
    body = response.content.decode()
    assert 'class="form-error"' in body and "correct username and password" in body
    assert "_auth_user_id" not in client.session


@pytest.mark.django_db
def test_it_logs_out_by_post(login, owner):
    client = login(owner)
    response = client.post("/logout/")
    assert response.status_code == 302
    assert client.get("/w/vision/").status_code == 302  # back to the login page


@pytest.mark.django_db
def test_it_tells_a_reader_why_a_change_is_refused(login, reader, experiment):
    response = login(reader).post(f"/experiments/{experiment.pk}/archive/")
    assert response.status_code == 403
    assert "contributor role" in response.content.decode()


@pytest.mark.django_db
def test_it_shows_a_user_without_a_workspace_what_to_do(login, db):
    from tests.conftest import make_user

    response = login(make_user("newbie")).get("/", follow=True)
    assert "No workspace yet" in response.content.decode()
