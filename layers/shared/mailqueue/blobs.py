"""All S3 access: large email content, and attachments uploaded ahead of the email."""

from __future__ import annotations

import json
from typing import Any

from mailqueue.settings import Settings

CONTENT_PREFIX = "content/"
UPLOAD_URL_SECONDS = 900


class BlobStore:
    def __init__(self, settings: Settings, client: Any) -> None:
        self.bucket = settings.attachments_bucket
        self._client = client

    def put_content(self, email_id: str, content: dict[str, Any]) -> str:
        key = f"{CONTENT_PREFIX}{email_id}.json"
        self._client.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=json.dumps(content, separators=(",", ":")).encode(),
            ContentType="application/json",
        )
        return key

    def get_content(self, key: str) -> dict[str, Any]:
        body = self._client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        content: dict[str, Any] = json.loads(body)
        return content

    def size_of(self, key: str) -> int | None:
        """The size of an uploaded object, or None when there is no such object."""
        try:
            answer = self._client.head_object(Bucket=self.bucket, Key=key)
        except self._client.exceptions.ClientError as error:
            if error.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise
        return int(answer["ContentLength"])

    def get_bytes(self, key: str) -> bytes:
        data: bytes = self._client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return data

    def upload_url(self, key: str, content_type: str, checksum_sha256: str | None = None) -> str:
        """A presigned PUT; with ``checksum_sha256`` (base64), S3 refuses a body whose SHA-256 differs."""
        params = {"Bucket": self.bucket, "Key": key, "ContentType": content_type}
        if checksum_sha256 is not None:
            params["ChecksumSHA256"] = checksum_sha256
        url: str = self._client.generate_presigned_url("put_object", Params=params, ExpiresIn=UPLOAD_URL_SECONDS)
        return url
