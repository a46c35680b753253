"""All S3 access: large email content, and attachments uploaded ahead of the email."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from mailqueue.settings import Settings

CONTENT_PREFIX = "content/"
UPLOAD_URL_SECONDS = 900
# The bucket's lifecycle deletes an upload this many days after it was written (template.yaml), and
# content after the retention period. S3 counts from the object's last write: renewing an object
# (copying it onto itself) starts its count again.
UPLOAD_DAYS = 10


class ObjectTooLarge(Exception):
    """An object holds more bytes than may be read: its bytes were not read."""

    def __init__(self, key: str, size: int, limit: int) -> None:
        super().__init__(f"{key} holds {size} bytes or more; at most {limit} may be read")
        self.key = key
        self.size = size
        self.limit = limit


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
        found = self._stat(key)
        return None if found is None else int(found["Size"])

    def written_at(self, key: str) -> datetime | None:
        """When the object was last written (its lifecycle counts from then), or None if there is none."""
        found = self._stat(key)
        if found is None:
            return None
        written: datetime = found["LastModified"]
        return written

    def _stat(self, key: str) -> dict[str, Any] | None:
        """The object's listing entry, or None. A listing, not HeadObject: without s3:ListBucket on the
        whole bucket, S3 answers HeadObject on a missing key 403 rather than 404, and the API role may
        list only under uploads/ (an s3:prefix condition, which a listing's own prefix satisfies)."""
        answer = self._client.list_objects_v2(Bucket=self.bucket, Prefix=key, MaxKeys=1)
        entries = answer.get("Contents") or []
        # Keys sort by their bytes: the key itself comes before every longer key it is a prefix of.
        if entries and entries[0]["Key"] == key:
            return dict(entries[0])
        return None

    def expires_after(self, key: str, written: datetime, retention_days: int) -> datetime:
        """The earliest the lifecycle can delete ``key`` written at ``written`` (it deletes at a later midnight)."""
        days = UPLOAD_DAYS if not key.startswith(CONTENT_PREFIX) else retention_days
        return written + timedelta(days=days)

    def renew(self, key: str) -> None:
        """Write the object again as it is, so that the lifecycle counts its days from now."""
        self._client.copy_object(
            Bucket=self.bucket,
            Key=key,
            CopySource={"Bucket": self.bucket, "Key": key},
            MetadataDirective="REPLACE",
        )

    def get_bytes(self, key: str, limit: int) -> bytes:
        """The object's bytes, never more than ``limit`` of them in memory: ObjectTooLarge (and nothing
        read) when it says it holds more, and at most ``limit + 1`` bytes read if it holds more than it says."""
        answer = self._client.get_object(Bucket=self.bucket, Key=key)
        body = answer["Body"]
        try:
            size = int(answer.get("ContentLength", 0))
            if size > limit:
                raise ObjectTooLarge(key, size, limit)
            data: bytes = body.read(limit + 1)
            if len(data) > limit:
                raise ObjectTooLarge(key, len(data), limit)
            return data
        finally:
            body.close()

    def upload_form(self, key: str, content_type: str, size: int) -> tuple[str, dict[str, str]]:
        """A presigned POST for exactly one file: its key, its content type and its size (S3 refuses a file
        of any other size, with EntityTooLarge or EntityTooSmall), until UPLOAD_URL_SECONDS from now.

        The URL and the form fields to send with the file (as the last field, named ``file``).
        """
        post = self._client.generate_presigned_post(
            Bucket=self.bucket,
            Key=key,
            Fields={"Content-Type": content_type},
            Conditions=[{"Content-Type": content_type}, ["content-length-range", size, size]],
            ExpiresIn=UPLOAD_URL_SECONDS,
        )
        return str(post["url"]), {str(name): str(value) for name, value in post["fields"].items()}
