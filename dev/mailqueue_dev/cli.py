"""``mailqueue``: send emails and follow them from a terminal or a script.

It talks to the API: the local stack by default (``make dev``), or a deployed stack with ``--url`` or
``--stack NAME``; requests to a deployed stack are signed with SigV4 from the standard AWS credential
chain (the API uses IAM authorization), or carry ``--token`` when the stack accepts JWTs instead.

Exit codes, for scripts: 0 done; 1 the API refused the request (4xx) or an email was rejected;
2 usage error; 3 the API could not be reached or failed (5xx).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import mimetypes
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from email import policy
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urlencode, urlsplit

from mailqueue_dev import running
from mailqueue_dev.running import RunningStack

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3

DEFAULT_URL = "http://127.0.0.1:3000"
DEFAULT_OUTBOX = Path(".mailqueue") / "outbox"
BATCH_SIZE = 100
# Larger files go through POST /attachments (a presigned upload), not inline in the request body,
# which API Gateway caps at 10 MB (base64 adds a third).
INLINE_ATTACHMENT_LIMIT = 1024 * 1024
STATUSES = (
    "scheduled",
    "queued",
    "sending",
    "retrying",
    "sent",
    "delivered",
    "bounced",
    "complained",
    "failed",
    "cancelled",
)
# Where an email ended up for a reason worth showing next to its status: the reason is in its history.
OUTCOME_STATUSES = frozenset({"bounced", "complained", "failed"})
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "0.0.0.0"})  # noqa: S104 - compared, never bound


class Failure(Exception):
    """Ends the command with an exit code, and with the API's error body when there was one."""

    def __init__(self, code: int, message: str, body: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.body = body


# --- talking to the API ----------------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    body: Any


Transport = Callable[[str, str, dict[str, str], bytes | None], tuple[int, bytes]]


def requests_transport(timeout: tuple[float, float] = (5.0, 120.0)) -> Transport:
    """HTTP through ``requests``: (connect, read) timeouts; a request that cannot be made is exit code 3."""
    import requests  # noqa: PLC0415 - only when a request is made

    session = requests.Session()

    def send(method: str, url: str, headers: dict[str, str], body: bytes | None) -> tuple[int, bytes]:
        try:
            response = session.request(method, url, headers=headers, data=body, timeout=timeout)
        except requests.RequestException as error:
            raise Failure(EXIT_UNAVAILABLE, f"cannot reach {url}: {error.__class__.__name__}") from None
        return response.status_code, response.content

    return send


class SigV4Signer:
    """Signs requests for an HTTP API with IAM authorization (service ``execute-api``)."""

    def __init__(self, region: str | None = None, session: Any = None) -> None:
        import boto3  # noqa: PLC0415

        self._session = session or boto3.session.Session()
        self._region = region

    def headers(self, method: str, url: str, headers: dict[str, str], body: bytes | None) -> dict[str, str]:
        from botocore.auth import SigV4Auth  # noqa: PLC0415
        from botocore.awsrequest import AWSRequest  # noqa: PLC0415

        credentials = self._session.get_credentials()
        if credentials is None:
            raise Failure(EXIT_USAGE, "no AWS credentials found (see `aws configure` or AWS_PROFILE)")
        region = self._region or region_of(url) or self._session.region_name or "us-east-1"
        request = AWSRequest(method=method, url=url, data=body or b"", headers=headers)
        SigV4Auth(credentials.get_frozen_credentials(), "execute-api", region).add_auth(request)
        return dict(request.headers.items())


def region_of(url: str) -> str | None:
    """The region in an execute-api host name: abc123.execute-api.eu-west-1.amazonaws.com."""
    parts = (urlsplit(url).hostname or "").split(".")
    if "execute-api" in parts:
        index = parts.index("execute-api")
        if index + 1 < len(parts):
            return parts[index + 1]
    return None


def is_local(url: str) -> bool:
    return (urlsplit(url).hostname or "") in LOCAL_HOSTS


class Api:
    def __init__(
        self,
        url: str,
        transport: Transport | None = None,
        signer: SigV4Signer | None = None,
        token: str | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._transport = transport or requests_transport()
        self._signer = signer
        self._token = token

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        """One request; a 4xx or 5xx answer raises Failure with the API's error."""
        wanted = {key: value for key, value in (query or {}).items() if value is not None}
        url = f"{self.url}{path}" + (f"?{urlencode(wanted)}" if wanted else "")
        sent = {"accept": "application/json", **(headers or {})}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            sent["content-type"] = "application/json"
        if self._token:
            sent["authorization"] = f"Bearer {self._token}"
        elif self._signer is not None:
            sent = self._signer.headers(method, url, sent, payload)
        status, raw = self._transport(method, url, sent, payload)
        try:
            decoded = json.loads(raw) if raw else None
        except ValueError:
            decoded = raw.decode(errors="replace")
        if status >= 500:
            raise Failure(EXIT_UNAVAILABLE, f"the API failed ({status}): {_error_message(decoded)}", decoded)
        if status >= 400:
            raise Failure(EXIT_REFUSED, f"refused ({status}): {_error_message(decoded)}", decoded)
        return Answer(status, decoded)

    def upload(self, url: str, fields: dict[str, str], filename: str, content_type: str, data: bytes) -> int:
        """Send a file through a presigned POST: a multipart/form-data form of the ticket's fields, as they
        are, and the file last, named ``file``. The form carries its own signature: it is not signed again."""
        import requests  # noqa: PLC0415 - only when a file is uploaded

        form = requests.Request("POST", url, data=fields, files={"file": (filename, data, content_type)}).prepare()
        body = form.body if isinstance(form.body, bytes) else str(form.body or "").encode()
        status, _ = self._transport("POST", url, {"content-type": form.headers["Content-Type"]}, body)
        return status


def _error_message(body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        lines = [f"{error.get('code')}: {error.get('message')}"]
        message = str(error.get("message"))
        for detail in error.get("details") or []:
            line = f"{detail.get('field')}: {detail.get('message')}"
            if line not in message:
                lines.append(f"  {line}")
        return "\n".join(lines)
    if isinstance(body, dict) and "message" in body:
        return str(body["message"])
    return str(body)[:500]


def stack_url(stack_name: str, session: Any = None) -> str:
    """The ApiUrl output of a deployed mailqueue stack."""
    import boto3  # noqa: PLC0415
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

    session = session or boto3.session.Session()
    try:
        stacks = session.client("cloudformation").describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as error:
        raise Failure(EXIT_REFUSED, f"stack {stack_name}: {error.response['Error'].get('Message')}") from None
    except BotoCoreError as error:
        raise Failure(EXIT_UNAVAILABLE, f"cannot read stack {stack_name}: {error}") from None
    for output in stacks[0].get("Outputs", []) if stacks else []:
        if output.get("OutputKey") == "ApiUrl":
            return str(output["OutputValue"])
    raise Failure(EXIT_USAGE, f"stack {stack_name} has no ApiUrl output: is it a mailqueue stack?")


# --- output ------------------------------------------------------------------------------------------------------


@dataclass
class Output:
    as_json: bool
    out: IO[str]
    err: IO[str]

    def json(self, value: Any) -> None:
        print(json.dumps(value, indent=2, ensure_ascii=False), file=self.out)

    def line(self, text: str = "") -> None:
        print(text, file=self.out)

    def note(self, text: str) -> None:
        print(text, file=self.err)

    def table(self, headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        cells = [[_cell(value) for value in row] for row in rows]
        widths = [max([len(header), *(len(row[i]) for row in cells)]) for i, header in enumerate(headers)]
        for row in [list(headers), *cells]:
            self.line("  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip())


def _cell(value: Any, limit: int = 48) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Progress:
    """A one-line progress bar on a terminal; silent elsewhere."""

    def __init__(self, total: int, stream: IO[str], enabled: bool, width: int = 30) -> None:
        self.total, self.stream, self.enabled, self.width = total, stream, enabled, width
        self.done = 0

    def advance(self, count: int) -> None:
        self.done += count
        if self.enabled:
            filled = self.width * self.done // max(self.total, 1)
            bar = "#" * filled + "-" * (self.width - filled)
            self.stream.write(f"\r[{bar}] {self.done}/{self.total}")
            self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


# --- commands ----------------------------------------------------------------------------------------------------


def _attachment(api: Api, path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise Failure(EXIT_USAGE, f"cannot read {path}: {error.strerror}") from None
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if len(data) <= INLINE_ATTACHMENT_LIMIT:
        return {"filename": path.name, "content_type": content_type, "content": base64.b64encode(data).decode()}
    # Content-addressed: the same file gets the same key, so the same command sends the same email (and
    # replays under the same --idempotency-key); a file already uploaded is not uploaded again.
    upload = {
        "filename": path.name,
        "content_type": content_type,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    ticket = api.call("POST", "/attachments", upload).body
    if not ticket.get("uploaded"):
        status = api.upload(ticket["upload_url"], dict(ticket.get("fields") or {}), path.name, content_type, data)
        if status >= 300:
            raise Failure(EXIT_UNAVAILABLE, f"uploading {path.name} failed ({status})")
    return {"filename": path.name, "content_type": content_type, "s3_key": ticket["s3_key"]}


def _addresses(values: list[str] | None) -> list[str]:
    return [part.strip() for value in values or [] for part in value.split(",") if part.strip()]


def email_from_flags(api: Api, args: argparse.Namespace) -> dict[str, Any]:
    templated = args.template is not None
    required = (("--from", args.sender),) if templated else (("--from", args.sender), ("--subject", args.subject))
    missing = [flag for flag, value in required if not value]
    if not (args.to or args.cc or args.bcc):
        missing.append("--to")
    if args.text is None and args.html is None and not templated:
        missing.append("--text or --html (or --template)")
    if missing:
        raise Failure(EXIT_USAGE, f"send needs {', '.join(missing)} (or --file)")
    email: dict[str, Any] = {"from": args.sender}
    if templated:
        from mailqueue_dev.cli_templates import load_data  # noqa: PLC0415

        email |= {"template": args.template, "data": load_data(args.data)}
        if args.template_version is not None:
            email["template_version"] = args.template_version
    if args.subject is not None:
        email["subject"] = args.subject
    for name, values in (("to", args.to), ("cc", args.cc), ("bcc", args.bcc), ("reply_to", args.reply_to)):
        if values:
            email[name] = _addresses(values)
    for name in ("text", "html", "send_at", "priority"):
        if getattr(args, name) is not None:
            email[name] = getattr(args, name)
    if args.skip_suppressed:
        email["skip_suppressed"] = True
    if args.attach:
        email["attachments"] = [_attachment(api, Path(path)) for path in args.attach]
    return email


def _load_file(path: str) -> Any:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise Failure(EXIT_USAGE, f"cannot read {path}: {error.strerror}") from None
    try:
        value = json.loads(text)
    except ValueError as error:
        raise Failure(EXIT_USAGE, f"{path} is not JSON: {error}") from None
    if isinstance(value, dict) and isinstance(value.get("emails"), list):
        return value["emails"]
    if not isinstance(value, dict | list):
        raise Failure(EXIT_USAGE, f"{path} must hold an email (a JSON object) or a list of them")
    return value


def cmd_send(api: Api, args: argparse.Namespace, output: Output) -> int:
    if args.file is not None:
        if _has_email_flags(args):
            raise Failure(EXIT_USAGE, "give the email either as flags or with --file, not both")
        loaded = _load_file(args.file)
        if isinstance(loaded, list):
            return send_batch(api, loaded, output, args.idempotency_key)
        email = loaded
    else:
        email = email_from_flags(api, args)
    headers = {"idempotency-key": args.idempotency_key} if args.idempotency_key else None
    answer = api.call("POST", "/emails", email, headers=headers).body
    if output.as_json:
        output.json(answer)
    else:
        output.line(f"{answer['id']}  {answer['status']}")
        if answer.get("message"):
            output.note(answer["message"])
    return EXIT_OK


def _has_email_flags(args: argparse.Namespace) -> bool:
    flags = (
        *("sender", "to", "cc", "bcc", "reply_to", "subject", "text", "html", "send_at", "priority", "attach"),
        *("template", "template_version", "data", "skip_suppressed"),
    )
    return any(getattr(args, name) for name in flags)


def send_batch(api: Api, emails: list[Any], output: Output, idempotency_key: str | None = None) -> int:
    """Send a list in chunks of 100 through POST /emails/batch; report every rejected email."""
    if not emails:
        raise Failure(EXIT_USAGE, "the file holds an empty list")
    progress = Progress(len(emails), output.err, enabled=not output.as_json and output.err.isatty())
    results: list[dict[str, Any]] = []
    unavailable: Failure | None = None
    for start in range(0, len(emails), BATCH_SIZE):
        chunk = emails[start : start + BATCH_SIZE]
        headers = {"idempotency-key": f"{idempotency_key}-{start // BATCH_SIZE}"} if idempotency_key else None
        try:
            answer = api.call("POST", "/emails/batch", {"emails": chunk}, headers=headers).body
        except Failure as failure:
            if failure.code == EXIT_UNAVAILABLE:
                # Stop: what follows would likely fail too, and what was accepted is reported below.
                unavailable = failure
                break
            error = failure.body.get("error") if isinstance(failure.body, dict) else {"message": failure.message}
            results += [{"index": start + i, "error": error} for i in range(len(chunk))]
        else:
            results += [{**item, "index": start + int(item["index"])} for item in answer["results"]]
        progress.advance(len(chunk))
    progress.finish()
    accepted = [result for result in results if result.get("id")]
    rejected = [result for result in results if not result.get("id")]
    summary = {
        "accepted": len(accepted),
        "rejected": len(rejected),
        "not_sent": len(emails) - len(results),
        "results": results,
    }
    if output.as_json:
        output.json(summary)
    else:
        output.line(f"{len(accepted)} accepted, {len(rejected)} rejected, {summary['not_sent']} not sent")
        for result in rejected:
            error = result.get("error") or {}
            details = "; ".join(f"{d.get('field')}: {d.get('message')}" for d in error.get("details") or [])
            output.line(f"  #{result['index']}: {error.get('code', 'error')}: {details or error.get('message')}")
    if unavailable is not None:
        raise Failure(EXIT_UNAVAILABLE, f"stopped after {len(results)} of {len(emails)}: {unavailable.message}")
    return EXIT_REFUSED if rejected else EXIT_OK


def cmd_status(api: Api, args: argparse.Namespace, output: Output) -> int:
    email = api.call("GET", f"/emails/{args.id}").body
    _show_email(email, output)
    return EXIT_OK


def _show_email(email: dict[str, Any], output: Output) -> None:
    if output.as_json:
        output.json(email)
        return
    fields = ("id", "status", "priority", "attempts", "to", "subject", "send_at", "deadline", "ses_message_id")
    width = max(len(name) for name in fields)
    recipients = email.get("recipients") or {}
    for name in (*fields, "created_at", "updated_at"):
        if name == "to" and recipients:
            # The whole list, each kind on its line (GET /emails/{id} shows every recipient).
            for kind in ("to", "cc", "bcc"):
                if recipients.get(kind):
                    output.line(f"{kind.ljust(width)}  {', '.join(recipients[kind])}")
        elif email.get(name) not in (None, ""):
            output.line(f"{name.ljust(width)}  {email[name]}")
    if email.get("template"):
        output.line(f"{'template'.ljust(width)}  {email['template']} version {email.get('template_version')}")
    reason = outcome_reason(email)
    if reason:
        output.line(f"{'reason'.ljust(width)}  {reason}")
    if email.get("last_error"):
        error = email["last_error"]
        output.line(f"{'last_error'.ljust(width)}  {error.get('code', '')}: {error.get('message', '')}")
    if email.get("history"):
        output.line()
        output.table(
            ("AT", "STATUS", "REASON"), [(h.get("at"), h.get("status"), h.get("reason")) for h in email["history"]]
        )


def outcome_reason(email: dict[str, Any]) -> str | None:
    """Why a bounced, complained or failed email ended so (``bounce Permanent/General``), from its history."""
    status = email.get("status")
    if status not in OUTCOME_STATUSES:
        return None
    for entry in reversed(email.get("history") or []):
        if entry.get("status") == status and entry.get("reason"):
            return str(entry["reason"])
    return None


def cmd_list(api: Api, args: argparse.Namespace, output: Output) -> int:
    page = api.call("GET", "/emails", query={"status": args.status, "limit": args.limit, "cursor": args.cursor}).body
    if output.as_json:
        output.json(page)
        return EXIT_OK
    rows = [
        (e["id"], e["status"], e.get("attempts"), e.get("to"), e.get("subject"), e.get("updated_at"))
        for e in page["emails"]
    ]
    if rows:
        output.table(("ID", "STATUS", "ATTEMPTS", "TO", "SUBJECT", "UPDATED"), rows)
    else:
        output.note(f"no {args.status} emails")
    if page.get("cursor"):
        output.note(f"more: mailqueue list --status {args.status} --limit {args.limit} --cursor {page['cursor']}")
    return EXIT_OK


def cmd_cancel(api: Api, args: argparse.Namespace, output: Output) -> int:
    _show_email(api.call("DELETE", f"/emails/{args.id}").body, output)
    return EXIT_OK


def cmd_retry(api: Api, args: argparse.Namespace, output: Output) -> int:
    _show_email(api.call("POST", f"/emails/{args.id}/retry").body, output)
    return EXIT_OK


def cmd_suppressions(api: Api, args: argparse.Namespace, output: Output) -> int:
    page = api.call("GET", "/suppressions", query={"limit": args.limit, "cursor": args.cursor}).body
    if output.as_json:
        output.json(page)
        return EXIT_OK
    rows = [(s["address"], s.get("reason"), s.get("added_at"), s.get("email_id")) for s in page["suppressions"]]
    if rows:
        output.table(("ADDRESS", "REASON", "ADDED", "EMAIL"), rows)
    else:
        output.note("no suppressed addresses" if not args.cursor else "no more suppressed addresses")
    if page.get("cursor"):
        output.note(f"more: mailqueue suppressions --limit {args.limit} --cursor {page['cursor']}")
    return EXIT_OK


def cmd_unsuppress(api: Api, args: argparse.Namespace, output: Output) -> int:
    address = args.address.strip()
    # Quoted whole, so that a + or a / in the address reaches the route as it is.
    api.call("DELETE", f"/suppressions/{quote(address, safe='@')}")
    if output.as_json:
        output.json({"address": address, "suppressed": False})
    else:
        output.line(f"{address} is no longer suppressed: emails to it are accepted again")
    return EXIT_OK


def count_status(api: Api, status: str, limit: int) -> tuple[int, bool]:
    """How many emails are in ``status``, paging up to ``limit``; True when there are more."""
    count, cursor = 0, None
    while True:
        page = api.call("GET", "/emails", query={"status": status, "limit": BATCH_SIZE, "cursor": cursor}).body
        count += len(page["emails"])
        cursor = page.get("cursor")
        if not cursor:
            return count, False
        if count >= limit:
            return count, True


def cmd_stats(api: Api, args: argparse.Namespace, output: Output) -> int:
    counts = {status: count_status(api, status, args.max) for status in STATUSES}
    if output.as_json:
        output.json(
            {
                "counts": {status: count for status, (count, _) in counts.items()},
                "capped": [status for status, (_, more) in counts.items() if more],
            }
        )
    else:
        output.table(
            ("STATUS", "COUNT"), [(status, f"{count}+" if more else count) for status, (count, more) in counts.items()]
        )
    return EXIT_OK


def outbox_entries(directory: Path) -> list[dict[str, Any]]:
    """The .eml files of the local outbox, newest first (their names are time-ordered email ids)."""
    parser = BytesHeaderParser(policy=policy.default)
    entries = []
    for path in sorted(directory.glob("*.eml"), reverse=True):
        with path.open("rb") as handle:
            headers = parser.parse(handle)
        entries.append(
            {
                "id": path.stem,
                "file": str(path),
                "from": str(headers.get("From", "")),
                "to": str(headers.get("To", "")),
                "subject": str(headers.get("Subject", "")),
                "date": str(headers.get("Date", "")),
            }
        )
    return entries


def outbox_dir(given: str | None = None) -> Path:
    """``--outbox``; ``$MAILQUEUE_OUTBOX``; the running stack's (from here or a parent); the project's default."""
    if given or os.environ.get("MAILQUEUE_OUTBOX"):
        return Path(given or os.environ["MAILQUEUE_OUTBOX"])
    state_dir = running.find_state_dir()
    if state_dir is None:
        return DEFAULT_OUTBOX
    stack = RunningStack.load(state_dir)
    return Path(stack.outbox) if stack is not None else state_dir / DEFAULT_OUTBOX.name


def cmd_outbox(_api: Api | None, args: argparse.Namespace, output: Output) -> int:
    directory = outbox_dir(args.outbox)
    if not directory.is_dir():
        raise Failure(EXIT_REFUSED, f"no outbox at {directory}: the local stack (make dev) writes it")
    if args.id:
        path = directory / f"{args.id}.eml"
        if not path.is_file():
            raise Failure(EXIT_REFUSED, f"no email {args.id} in {directory}")
        output.out.write(path.read_bytes().decode("utf-8", errors="replace"))
        return EXIT_OK
    entries = outbox_entries(directory)[: args.limit]
    if output.as_json:
        output.json(entries)
    elif entries:
        output.table(("ID", "FROM", "TO", "SUBJECT"), [(e["id"], e["from"], e["to"], e["subject"]) for e in entries])
    else:
        output.note(f"{directory} is empty")
    return EXIT_OK


# --- arguments ---------------------------------------------------------------------------------------------------


def _page_size(value: str) -> int:
    try:
        size = int(value)
    except ValueError:
        size = 0
    if not 1 <= size <= 100:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number from 1 to 100")
    return size


def _global_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    default: Any = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--url",
        default=default,
        help="the API (default: $MAILQUEUE_URL, else http://127.0.0.1:$MAILQUEUE_API_PORT, else the stack `make dev` "
        f"runs from this directory or a parent, else {DEFAULT_URL}); deployed APIs are signed",
    )
    parser.add_argument("--stack", default=default, metavar="NAME", help="read the URL from this stack's outputs")
    parser.add_argument(
        "--token",
        default=default,
        metavar="JWT",
        help="for a stack deployed with JwtIssuer: send this bearer token instead of signing (or $MAILQUEUE_TOKEN)",
    )
    parser.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS if suppress else False, help="machine output"
    )


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(
        prog="mailqueue",
        description="Send emails through mailqueue and follow them.",
        epilog="Exit codes: 0 done, 1 refused by the API (4xx), 2 usage, 3 unreachable or failed (5xx).",
    )
    _global_options(main, suppress=False)
    commands = main.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, suppress=True)

    send = commands.add_parser("send", parents=[common], help="enqueue an email (flags) or emails (--file)")
    send.add_argument("--from", dest="sender", metavar="ADDRESS", help="'Shop <app@example.com>'")
    send.add_argument("--to", action="append", metavar="ADDRESS", help="repeat or separate with commas")
    send.add_argument("--cc", action="append", metavar="ADDRESS")
    send.add_argument("--bcc", action="append", metavar="ADDRESS")
    send.add_argument("--reply-to", action="append", metavar="ADDRESS")
    send.add_argument("--subject")
    send.add_argument("--text", help="the plain-text body")
    send.add_argument("--html", help="the HTML body")
    send.add_argument("--template", metavar="NAME", help="render subject, text and html from this stored template")
    send.add_argument("--template-version", type=int, metavar="N", help="the template's version (default: latest)")
    send.add_argument("--data", metavar="JSON", help="the template's variables, as JSON or @FILE")
    send.add_argument("--attach", action="append", metavar="FILE", help="attach a file (repeatable)")
    send.add_argument("--send-at", metavar="ISO8601", help="when to send, e.g. 2030-01-01T09:00:00+00:00")
    send.add_argument("--priority", choices=("normal", "high"))
    send.add_argument(
        "--skip-suppressed", action="store_true", help="send to the other recipients when some are suppressed"
    )
    send.add_argument(
        "--file", metavar="JSON", help="an email (object) or a list of emails, sent 100 at a time; - for stdin"
    )
    send.add_argument("--idempotency-key", metavar="KEY", help="replays the first answer for 24 hours")
    send.set_defaults(run=cmd_send)

    status = commands.add_parser("status", parents=[common], help="an email's status and history")
    status.add_argument("id")
    status.set_defaults(run=cmd_status)

    listing = commands.add_parser(
        "list",
        parents=[common],
        help="emails in one status (next due first for scheduled and retrying, else newest first)",
    )
    listing.add_argument("--status", required=True, choices=STATUSES)
    listing.add_argument("--limit", type=_page_size, default=20, metavar="1-100")
    listing.add_argument("--cursor")
    listing.set_defaults(run=cmd_list)

    cancel = commands.add_parser("cancel", parents=[common], help="cancel a scheduled, queued or retrying email")
    cancel.add_argument("id")
    cancel.set_defaults(run=cmd_cancel)

    retry = commands.add_parser("retry", parents=[common], help="send a failed email again")
    retry.add_argument("id")
    retry.set_defaults(run=cmd_retry)

    stats = commands.add_parser(
        "stats",
        parents=[common],
        help="how many emails are in each status (pages through them all: one request per 100 emails)",
    )
    stats.add_argument(
        "--max", type=int, default=10_000, help="stop counting a status after this many (default 10,000)"
    )
    stats.set_defaults(run=cmd_stats)

    suppressions = commands.add_parser(
        "suppressions", parents=[common], help="addresses emails are refused for: permanent bounces, complaints"
    )
    suppressions.add_argument("--limit", type=_page_size, default=50, metavar="1-100")
    suppressions.add_argument("--cursor")
    suppressions.set_defaults(run=cmd_suppressions)

    unsuppress = commands.add_parser("unsuppress", parents=[common], help="lift an address from the suppression list")
    unsuppress.add_argument("address")
    unsuppress.set_defaults(run=cmd_unsuppress)

    from mailqueue_dev.cli_templates import add_commands  # noqa: PLC0415

    add_commands(commands, common, _page_size)

    outbox = commands.add_parser("outbox", parents=[common], help="what the local stack sent (.eml files)")
    outbox.add_argument("id", nargs="?", help="print this email's .eml")
    outbox.add_argument("--limit", type=int, default=20)
    outbox.add_argument("--outbox", metavar="DIR", help=f"default: $MAILQUEUE_OUTBOX or {DEFAULT_OUTBOX}")
    outbox.set_defaults(run=cmd_outbox, local_only=True)

    from mailqueue_dev import console  # noqa: PLC0415 - the console imports this module

    console.register(commands, common)
    from mailqueue_dev import listen  # noqa: PLC0415

    listen.register(commands, common)
    return main


def api_for(args: argparse.Namespace, transport: Transport | None = None) -> Api:
    if args.url and args.stack:
        raise Failure(EXIT_USAGE, "give --url or --stack, not both")
    url, stack = (stack_url(args.stack), None) if args.stack else resolve_url(args.url)
    if urlsplit(url).scheme not in {"http", "https"}:
        raise Failure(EXIT_USAGE, f"{url} is not an http(s) URL")
    token = args.token or os.environ.get("MAILQUEUE_TOKEN")
    signer = None if token or is_local(url) else SigV4Signer()
    api = Api(url, transport=transport, signer=signer, token=token)
    if stack is not None:
        check_identity(api, stack)
    return api


def resolve_url(given: str | None, env: Mapping[str, str] | None = None) -> tuple[str, RunningStack | None]:
    """The API to talk to, and the local stack it must be (when it is one started from here).

    In order: ``--url``; ``$MAILQUEUE_URL``; ``$MAILQUEUE_API_PORT`` (as ``make dev`` reads it); the stack
    running from this directory or a parent (its ``.mailqueue/stack.json``); else the default local URL.
    """
    env = os.environ if env is None else env
    port = (env.get("MAILQUEUE_API_PORT") or "").strip()
    url = given or env.get("MAILQUEUE_URL") or (f"http://127.0.0.1:{port}" if port else None)
    state_dir = running.find_state_dir()
    stack = RunningStack.load(state_dir) if state_dir is not None else None
    if url is not None:
        # Named explicitly: checked only when it is the URL of the stack started from here.
        return url, stack if stack is not None and stack.url == url.rstrip("/") else None
    if stack is not None:
        if not stack.alive:
            raise Failure(
                EXIT_UNAVAILABLE,
                f"the local stack started in {stack.root} is not running (process {stack.pid} ended): "
                "start it with `make dev`",
            )
        return stack.url, stack
    if state_dir is not None:
        # This project ran a stack once, and it is not running: whatever answers on the default port is not it.
        raise Failure(
            EXIT_UNAVAILABLE,
            f"no local stack is running from {state_dir.parent}: start it with `make dev` "
            "(or give --url, or MAILQUEUE_API_PORT)",
        )
    return DEFAULT_URL, None


def check_identity(api: Api, stack: RunningStack) -> None:
    """Refuse to talk to anything but the stack that wrote stack.json (another may hold its port)."""
    try:
        answer = api.call("GET", running.IDENTITY_PATH)
    except Failure as failure:
        raise Failure(
            EXIT_UNAVAILABLE,
            f"the local stack started in {stack.root} does not answer at {stack.url} ({failure.message}): "
            "is `make dev` still running?",
        ) from None
    if not isinstance(answer.body, dict) or answer.body.get("token") != stack.token:
        raise Failure(
            EXIT_UNAVAILABLE,
            f"{stack.url} is not the local stack started in {stack.root}: another server holds its port. "
            "Stop it, or give --url to talk to it anyway",
        )


def main(
    argv: Sequence[str] | None = None,
    transport: Transport | None = None,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    try:
        args = parser().parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    output = Output(as_json=args.json, out=out, err=err)
    try:
        api = None if getattr(args, "local_only", False) else api_for(args, transport)
        code: int = args.run(api, args, output)
    except Failure as failure:
        if output.as_json and failure.body is not None:
            output.json(failure.body)
        print(f"mailqueue: {failure.message}", file=err)
        return failure.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader left (`mailqueue stats | head`): stop quietly, and let nothing flush into the closed pipe.
        _silence(out)
        return EXIT_OK
    return code


def _silence(stream: IO[str]) -> None:
    if stream is sys.stdout:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


if __name__ == "__main__":
    sys.exit(main())
