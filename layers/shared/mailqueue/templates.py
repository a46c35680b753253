"""Stored, versioned templates: saving, reading, listing, deleting, previewing, and rendering emails from them.

Templates live in the emails table, beside the suppression list, under partitions of their own:

- ``pk = "templates"``, ``sk = <name>``: one small head item per template (its latest version,
  when it was created and last changed); listing the templates reads this one partition.
- ``pk = "template#<name>"``, ``sk = "v#0000000001"``…: one item per version, never changed once
  written: its subject, text and html as plain attributes, readable in the console.

Saving writes the next version and moves the head in one transaction, conditional on the head's
version being the one read, so two saves at once cannot both make version N. Deleting marks the head
and removes every version; a template saved again under the same name goes on from the next number,
so a name and version always mean one content.

Emails are rendered when they are accepted (see docs/templates.md for why): an email names a template
and gives data; :meth:`TemplateLibrary.expand` reads each template once per call, renders it, and
builds the same :class:`~mailqueue.models.EmailRequest` a hand-written email is, so the rendered email
passes every check a hand-written one passes.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from mailqueue import clock
from mailqueue.errors import EmailNotFound, FieldError, InvalidEmail, InvalidParameter, MailqueueError
from mailqueue.html_text import html_to_text
from mailqueue.models import EmailRequest
from mailqueue.settings import Settings
from mailqueue.template_models import (
    TEMPLATE_NAME,
    Preview,
    TemplateList,
    TemplateRequest,
    TemplateSummary,
    TemplateView,
)

HEADS = "templates"
_VERSION_PREFIX = "v#"
_SAVE_ATTEMPTS = 5
# The rendered content one call may hold, in characters: what a request of hand-written emails can
# carry (Lambda takes 6 MB), so a call of short items and long templates cannot exhaust the function.
MAX_RENDERED_PER_CALL = 6_000_000
_BATCH_WRITE_LIMIT = 25


class TemplateNotFound(EmailNotFound):
    """No such template, or no such version of it."""


class InvalidTemplate(InvalidEmail):
    """A template that cannot be stored: it does not compile, or breaks a rule."""

    code = "invalid_template"


class TemplateDataError(InvalidEmail):
    """An email's template could not be rendered with its data: a variable is missing, or a limit was hit."""


class TemplateConflict(MailqueueError):
    """Saves of the same template kept colliding: the caller may send it again."""

    code = "template_conflict"
    http_status = 409


def check_name(name: str) -> str:
    if not TEMPLATE_NAME.match(name):
        raise InvalidTemplate.on("name", "use a lowercase letter or digit, then up to 63 of a-z, 0-9, '-' and '_'")
    return name


def _partition(name: str) -> str:
    return f"template#{name}"


def _version_key(version: int) -> str:
    return f"{_VERSION_PREFIX}{version:010d}"


@dataclass(frozen=True)
class TemplateRef:
    """Which template, and which version of it, an email was rendered from."""

    name: str
    version: int


class TemplateStore:
    """All DynamoDB access for templates."""

    def __init__(self, settings: Settings, client: Any) -> None:
        from boto3.dynamodb.types import TypeDeserializer, TypeSerializer  # noqa: PLC0415

        self.table = settings.table_name
        self._client = client
        self._ser = TypeSerializer()
        self._de = TypeDeserializer()

    def _encode(self, item: dict[str, Any]) -> dict[str, Any]:
        return {key: self._ser.serialize(value) for key, value in item.items() if value is not None}

    def _decode(self, item: dict[str, Any]) -> dict[str, Any]:
        decoded = {key: self._de.deserialize(value) for key, value in item.items()}
        return {key: int(value) if key in {"version", "latest_version"} else value for key, value in decoded.items()}

    def head(self, name: str) -> dict[str, Any] | None:
        answer = self._client.get_item(
            TableName=self.table, Key={"pk": {"S": HEADS}, "sk": {"S": name}}, ConsistentRead=True
        )
        return self._decode(answer["Item"]) if "Item" in answer else None

    def save(self, name: str, parts: dict[str, str | None], now: str) -> dict[str, Any]:
        """Write the next version of ``name``; returns it. Raises :class:`TemplateConflict` if saves keep colliding."""
        for _ in range(_SAVE_ATTEMPTS):
            head = self.head(name)
            previous = int(head["latest_version"]) if head else 0
            version = previous + 1
            item = {"pk": _partition(name), "sk": _version_key(version), "name": name, "version": version}
            item |= {**parts, "created_at": now}
            condition = "attribute_not_exists(pk)" if head is None else "latest_version = :previous"
            values: dict[str, Any] = {":version": {"N": str(version)}, ":now": {"S": now}, ":name": {"S": name}}
            if head is not None:
                values[":previous"] = {"N": str(previous)}
            try:
                self._client.transact_write_items(
                    TransactItems=[
                        {
                            "Put": {
                                "TableName": self.table,
                                "Item": self._encode(item),
                                "ConditionExpression": "attribute_not_exists(pk)",
                            }
                        },
                        {
                            "Update": {
                                "TableName": self.table,
                                "Key": {"pk": {"S": HEADS}, "sk": {"S": name}},
                                "UpdateExpression": "SET latest_version = :version, updated_at = :now, #name = :name, "
                                "created_at = if_not_exists(created_at, :now) REMOVE deleted_at",
                                "ConditionExpression": condition,
                                "ExpressionAttributeNames": {"#name": "name"},
                                "ExpressionAttributeValues": values,
                            }
                        },
                    ]
                )
            except self._client.exceptions.TransactionCanceledException:
                time.sleep(0.02)
                continue
            return item
        raise TemplateConflict(f"template {name} is being saved by someone else; try again")

    def version(self, name: str, version: int | None) -> dict[str, Any] | None:
        """One version, or the latest when ``version`` is None."""
        if version is not None:
            answer = self._client.get_item(
                TableName=self.table,
                Key={"pk": {"S": _partition(name)}, "sk": {"S": _version_key(version)}},
                ConsistentRead=True,
            )
            return self._decode(answer["Item"]) if "Item" in answer else None
        answer = self._client.query(
            TableName=self.table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
            ExpressionAttributeValues={":pk": {"S": _partition(name)}, ":prefix": {"S": _VERSION_PREFIX}},
            ScanIndexForward=False,
            Limit=1,
            ConsistentRead=True,
        )
        items = answer.get("Items", [])
        return self._decode(items[0]) if items else None

    def heads(self, limit: int, after: str | None) -> tuple[list[dict[str, Any]], str | None]:
        """Up to ``limit`` live templates by name after ``after``, and the name to go on from."""
        found: list[dict[str, Any]] = []
        start = after
        while len(found) < limit:
            params: dict[str, Any] = {
                "TableName": self.table,
                "KeyConditionExpression": "pk = :pk",
                "FilterExpression": "attribute_not_exists(deleted_at)",
                "ExpressionAttributeValues": {":pk": {"S": HEADS}},
                "Limit": limit,
            }
            if start:
                params["ExclusiveStartKey"] = {"pk": {"S": HEADS}, "sk": {"S": start}}
            answer = self._client.query(**params)
            for item in answer.get("Items", []):
                if len(found) < limit:
                    found.append(self._decode(item))
            last = answer.get("LastEvaluatedKey")
            if not last:
                return found, None
            start = last["sk"]["S"]
        return found, found[-1]["name"] if found else None

    def delete(self, name: str, now: str) -> bool:
        """Mark ``name`` deleted and remove its versions; False when there was no such template."""
        try:
            self._client.update_item(
                TableName=self.table,
                Key={"pk": {"S": HEADS}, "sk": {"S": name}},
                UpdateExpression="SET deleted_at = :now, updated_at = :now",
                ConditionExpression="attribute_exists(pk) AND attribute_not_exists(deleted_at)",
                ExpressionAttributeValues={":now": {"S": now}},
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            return False
        keys: list[dict[str, Any]] = []
        params: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": _partition(name)}},
            "ProjectionExpression": "pk, sk",
        }
        while True:
            answer = self._client.query(**params)
            keys.extend(answer.get("Items", []))
            if "LastEvaluatedKey" not in answer:
                break
            params["ExclusiveStartKey"] = answer["LastEvaluatedKey"]
        for start in range(0, len(keys), _BATCH_WRITE_LIMIT):
            pending = [{"DeleteRequest": {"Key": key}} for key in keys[start : start + _BATCH_WRITE_LIMIT]]
            for attempt in range(5):
                answer = self._client.batch_write_item(RequestItems={self.table: pending})
                pending = answer.get("UnprocessedItems", {}).get(self.table, [])
                if not pending:
                    break
                time.sleep(0.05 * 2**attempt)
        return True


def _view(item: dict[str, Any]) -> TemplateView:
    return TemplateView(
        name=item["name"],
        version=int(item["version"]),
        subject=item["subject"],
        text=item.get("text"),
        html=item.get("html"),
        created_at=item["created_at"],
    )


@dataclass
class TemplateLibrary:
    """The template operations the API offers."""

    store: TemplateStore

    def put(self, name: str, request: TemplateRequest, now: datetime | None = None) -> TemplateView:
        from mailqueue.templating import Parts, compile_parts  # noqa: PLC0415

        check_name(name)
        html = request.html
        if html is not None and request.inline_css:
            html = _inline_css(html)
        compile_parts(Parts(subject=request.subject, text=request.text, html=html))
        item = self.store.save(name, {"subject": request.subject, "text": request.text, "html": html}, _now(now))
        return _view(item)

    def get(self, name: str, version: int | None = None) -> TemplateView:
        return _view(self._item(name, version))

    def page(self, limit: int = 50, cursor: str | None = None) -> TemplateList:
        if not 1 <= limit <= 100:
            raise InvalidParameter.on("limit", "must be between 1 and 100")
        after = _decode_cursor(cursor) if cursor else None
        heads, last = self.store.heads(limit, after)
        return TemplateList(
            templates=[
                TemplateSummary(
                    name=head["name"],
                    latest_version=int(head["latest_version"]),
                    created_at=head["created_at"],
                    updated_at=head["updated_at"],
                )
                for head in heads
            ],
            cursor=_encode_cursor(last) if last else None,
        )

    def delete(self, name: str, now: datetime | None = None) -> None:
        check_name(name)
        if not self.store.delete(name, _now(now)):
            raise TemplateNotFound(f"no template is named {name}")

    def preview(self, name: str, data: dict[str, Any], version: int | None = None) -> Preview:
        ref, parts = self._render(name, version, data)
        text = parts.text if parts.text is not None else (html_to_text(parts.html) if parts.html else None)
        return Preview(
            template=ref.name, template_version=ref.version, subject=parts.subject, text=text, html=parts.html
        )

    def expand(self, requests: list[EmailRequest]) -> list[tuple[EmailRequest, TemplateRef | None] | InvalidEmail]:
        """Each request rendered from its template, if it names one, and checked as a hand-written email.

        Each template (name and version) is read once per call, however many emails use it. An
        email that cannot be rendered, or whose rendered form is not a valid email, is an
        :class:`InvalidEmail` in its place.
        """
        read: dict[tuple[str, int | None], dict[str, Any]] = {}
        results: list[tuple[EmailRequest, TemplateRef | None] | InvalidEmail] = []
        rendered = 0
        for request in requests:
            if request.template is not None and rendered > MAX_RENDERED_PER_CALL:
                message = (
                    f"the call's emails render to more than {MAX_RENDERED_PER_CALL} characters; send fewer per call"
                )
                results.append(TemplateDataError(message, [FieldError("template", message)]))
                continue
            result = self._expand_one(request, read)
            if request.template is not None and not isinstance(result, InvalidEmail):
                email = result[0]
                rendered += sum(len(part or "") for part in (email.subject, email.text, email.html))
            results.append(result)
        return results

    def _expand_one(
        self, request: EmailRequest, read: dict[tuple[str, int | None], dict[str, Any]]
    ) -> tuple[EmailRequest, TemplateRef | None] | InvalidEmail:
        if request.template is None:
            return request, None
        try:
            ref, parts = self._render(request.template, request.template_version, request.data or {}, read)
        except TemplateNotFound as error:
            return InvalidEmail(error.message, [FieldError("template", error.message)])
        except InvalidEmail as error:
            return error
        fields = request.model_dump(by_alias=True, exclude={"template", "template_version", "data"})
        fields |= {"subject": parts.subject, "text": parts.text, "html": parts.html}
        try:
            rendered = EmailRequest.model_validate(fields)
        except ValidationError as error:
            from mailqueue.service import validation_failure  # noqa: PLC0415

            failure = validation_failure(error)
            return InvalidEmail(f"the rendered email is not valid: {failure.message}", failure.details)
        return rendered, ref

    def _render(
        self,
        name: str,
        version: int | None,
        data: dict[str, Any],
        read: dict[tuple[str, int | None], dict[str, Any]] | None = None,
    ) -> tuple[TemplateRef, Any]:
        from mailqueue.templating import Parts, compiled_version, render_parts  # noqa: PLC0415

        item = self._item(name, version, read)
        ref = TemplateRef(item["name"], int(item["version"]))
        parts = Parts(subject=item["subject"], text=item.get("text"), html=item.get("html"))
        return ref, render_parts(compiled_version(ref.name, ref.version, parts), data)

    def _item(
        self, name: str, version: int | None, read: dict[tuple[str, int | None], dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """A stored version; ``read`` holds what this call already read, so each is read once per call."""
        check_name(name)
        key = (name, version)
        item = read.get(key) if read is not None else None
        if item is None:
            item = self.store.version(name, version)
            if item is None:
                which = f"version {version} of template {name}" if version else f"template {name}"
                raise TemplateNotFound(f"there is no {which}")
            if read is not None:
                read[key] = item
        return item


def _inline_css(html: str) -> str:
    """The HTML with its <style> rules copied into style attributes.

    The <style> blocks stay too, for the clients that read them and for what no attribute can hold
    (@media rules). Stylesheets the HTML links to are never fetched: a template carries its own CSS.
    """
    import css_inline  # noqa: PLC0415

    inliner = css_inline.CSSInliner(load_remote_stylesheets=False, keep_style_tags=True)
    try:
        inlined: str = inliner.inline(html)
    except ValueError as error:
        raise InvalidTemplate.on("html", f"its CSS cannot be inlined: {error}") from None
    return inlined


def _now(now: datetime | None) -> str:
    return clock.iso(now or clock.now())


def _encode_cursor(name: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": name}).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str:
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))["after"]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise InvalidParameter.on("cursor", "is not a cursor this API returned") from None
    if not isinstance(value, str) or not TEMPLATE_NAME.match(value):
        raise InvalidParameter.on("cursor", "is not a cursor this API returned")
    return value
