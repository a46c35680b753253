import pytest

from tests.conftest import an_email

pytestmark = pytest.mark.integration


def test_enqueue_through_the_emulator(server_api, emulator, server_stack):
    status, body = server_api.post("/emails", an_email())
    assert status == 202, body
    sqs = emulator.client("sqs")
    messages = sqs.receive_message(QueueUrl=server_stack.names["SendQueue"], MaxNumberOfMessages=10)["Messages"]
    assert [m["Body"] for m in messages] == [f'{{"id": "{body["id"]}"}}']
