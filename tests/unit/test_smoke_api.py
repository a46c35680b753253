from tests.conftest import an_email


def test_enqueue_and_get(api):
    status, body = api.post("/emails", an_email())
    assert status == 202, body
    assert body["status"] == "queued"
    status, email = api.get(f"/emails/{body['id']}")
    assert status == 200, email
    assert email["status"] == "queued"
