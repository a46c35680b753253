"""The console's pages: a WSGI application, server-rendered with Jinja2 (autoescaped), on loopback only.

The console acts on the user's behalf with their credentials, so it guards itself as a local web app must:
- every request must name this server in its Host header (127.0.0.1 or localhost and the port), which
  defeats DNS rebinding: a page of another site whose name was made to point at 127.0.0.1 sends its own
  host name;
- every action is a POST form carrying a token drawn once per process, and a POST whose Origin (when
  the browser sends one) is not this server is refused: another site cannot make the browser act;
- pages forbid framing and load scripts and styles from this server alone.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from mailqueue.ids import is_email_id
from mailqueue.records import is_held
from mailqueue.ses_errors import CODES, SendOutcome

from mailqueue_dev.console.client import STATUSES, ApiError, ConsoleClient
from mailqueue_dev.console.overview import DEFAULT_CAP, LIVE_STATUSES, CachedOverview, Overview, read_stats

HERE = Path(__file__).parent
STATIC = {"console.css": "text/css; charset=utf-8", "console.js": "text/javascript; charset=utf-8"}
PAGE_SIZES = (20, 50, 100)
SEARCH_CAP = 500
MAX_FORM_BYTES = 8192
MAX_EML_SHOWN = 256 * 1024
CANCELLABLE = frozenset({"scheduled", "queued", "sending", "retrying"})
SECURITY_HEADERS = [
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "same-origin"),  # no-referrer would make Chrome send Origin: null
    ("Cache-Control", "no-store"),
]

StartResponse = Callable[..., Any]
Environ = dict[str, Any]


@dataclass
class Response:
    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = "text/html; charset=utf-8"


class Refused(Exception):
    """A request the console will not serve: its status and why."""

    def __init__(self, status: HTTPStatus, why: str) -> None:
        super().__init__(why)
        self.status = status
        self.why = why


@dataclass
class TimelineEntry:
    at: str
    status: str
    reason: str
    kind: str
    error_class: str | None = None
    bounce: dict[str, Any] | None = None


_WORD = re.compile(r"[A-Za-z]+")


def error_class(reason: str) -> str | None:
    """The class of the SES error a history reason names (throttled, transient, account, permanent, unknown)."""
    if reason.startswith("held:"):
        return SendOutcome.ACCOUNT.value
    if reason.startswith("outcome unknown"):
        return SendOutcome.UNKNOWN.value
    for word in _WORD.findall(reason):
        if word in CODES:
            return CODES[word].value
    return None


def timeline(email: dict[str, Any]) -> list[TimelineEntry]:
    """The email's history as steps a person reads: requests, attempts, SES's answers and SES's events."""
    entries = []
    history = list(email.get("history") or [])
    last_bounced = max((i for i, h in enumerate(history) if h.get("status") == "bounced"), default=None)
    for index, entry in enumerate(history):
        status, reason = str(entry.get("status", "")), str(entry.get("reason") or "")
        if status == "sending":
            kind = "attempt"
        elif status in {"delivered", "bounced", "complained"} or reason.startswith(("SES Send event", "rejected")):
            kind = "SES event"
        elif (status in {"sent", "retrying", "failed"} and error_class(reason)) or reason == "accepted by SES":
            kind = "SES answer"
        elif "by request" in reason or reason == "accepted":
            kind = "request"
        else:
            kind = "queue"
        entries.append(
            TimelineEntry(
                at=str(entry.get("at", "")),
                status=status,
                reason=reason,
                kind=kind,
                error_class=error_class(reason),
                bounce=email.get("bounce") if index == last_bounced else None,
            )
        )
    return entries


@dataclass
class OutboxCopy:
    """The message as the local stack's outbox holds it: what SES received."""

    path: Path
    headers: list[tuple[str, str]]
    text: str | None
    raw: str
    cut: bool


def read_outbox(directory: Path | None, email_id: str) -> OutboxCopy | None:
    if directory is None or not is_email_id(email_id):
        return None
    path = directory / f"{email_id}.eml"
    if not path.is_file():
        return None
    data = path.read_bytes()
    message = message_from_bytes(data, policy=policy.default)
    shown = ("From", "To", "Cc", "Reply-To", "Subject", "Date", "Message-ID")
    headers = [(name, str(message[name])) for name in shown if message[name] is not None]
    text = None
    if isinstance(message, EmailMessage):
        part = message.get_body(preferencelist=("plain",))
        if part is not None and isinstance(part, EmailMessage):
            text = str(part.get_content())
    cut = len(data) > MAX_EML_SHOWN
    return OutboxCopy(path, headers, text, data[:MAX_EML_SHOWN].decode("utf-8", errors="replace"), cut)


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)


def _time(value: Any) -> str:
    """An API timestamp (ISO 8601, UTC) as people read it: 2030-01-01 09:00:02 UTC."""
    if not isinstance(value, str) or not value:
        return ""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class Console:
    """The console application. ``port`` is the one the server listens on (for the Host and Origin checks)."""

    def __init__(
        self,
        client: ConsoleClient,
        port: int,
        outbox: Path | None = None,
        overview_seconds: float = 2.0,
        cap: int = DEFAULT_CAP,
        refresh_seconds: int = 5,
    ) -> None:
        self.client = client
        self.port = port
        self.outbox = outbox
        self.refresh_seconds = refresh_seconds
        self.token = secrets.token_urlsafe(32)
        self.overview = CachedOverview(client, overview_seconds, cap)
        self.templates = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters["pretty"] = _pretty
        self.templates.filters["time"] = _time
        self.templates.globals.update(
            statuses=STATUSES, csrf_token=self.token, api_url=client.url, quote=quote, urlencode=urlencode
        )
        self.routes: list[tuple[str, re.Pattern[str], Callable[..., Response]]] = [
            ("GET", re.compile(r"/"), self.overview_page),
            ("GET", re.compile(r"/fragments/overview"), self.overview_fragment),
            ("GET", re.compile(r"/emails"), self.list_page),
            ("GET", re.compile(r"/emails/(?P<email_id>[^/]+)\.eml"), self.eml_file),
            ("GET", re.compile(r"/emails/(?P<email_id>[^/]+)"), self.email_page),
            ("GET", re.compile(r"/emails/(?P<email_id>[^/]+)/(?P<action>cancel|retry)"), self.confirm_action),
            ("POST", re.compile(r"/emails/(?P<email_id>[^/]+)/(?P<action>cancel|retry)"), self.do_action),
            ("GET", re.compile(r"/search"), self.search_page),
            ("GET", re.compile(r"/suppressions"), self.suppressions_page),
            ("GET", re.compile(r"/suppressions/lift"), self.confirm_lift),
            ("POST", re.compile(r"/suppressions/lift"), self.do_lift),
            ("GET", re.compile(r"/static/(?P<name>[a-z.]+)"), self.static),
        ]

    # --- WSGI --------------------------------------------------------------------------------------------

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        try:
            self._check_host(environ)
            response = self._dispatch(environ)
        except Refused as refused:
            response = self._page(refused.status, "refused.html", title=refused.status.phrase, why=refused.why)
        headers = [
            ("Content-Type", response.content_type),
            ("Content-Length", str(len(response.body))),
            *SECURITY_HEADERS,
            *response.headers,
        ]
        status = HTTPStatus(response.status)
        start_response(f"{status.value} {status.phrase}", headers)
        return [response.body]

    def allowed_hosts(self) -> set[str]:
        return {f"127.0.0.1:{self.port}", f"localhost:{self.port}"}

    def _check_host(self, environ: Environ) -> None:
        host = str(environ.get("HTTP_HOST", "")).lower()
        if host not in self.allowed_hosts():
            raise Refused(
                HTTPStatus.MISDIRECTED_REQUEST,
                f"this console answers at http://127.0.0.1:{self.port}/ only, not for the host {host or '(none)'}",
            )

    def _check_post(self, environ: Environ, form: dict[str, str]) -> None:
        origin = environ.get("HTTP_ORIGIN")
        if origin is not None and origin.lower() not in {f"http://{host}" for host in self.allowed_hosts()}:
            raise Refused(HTTPStatus.FORBIDDEN, f"a form from {origin} cannot act through this console")
        if environ.get("HTTP_SEC_FETCH_SITE", "same-origin") not in {"same-origin", "none"}:
            raise Refused(HTTPStatus.FORBIDDEN, "a form from another site cannot act through this console")
        if not hmac.compare_digest(form.get("csrf_token", ""), self.token):
            raise Refused(
                HTTPStatus.FORBIDDEN, "the form's token is not this console's (was the console restarted?): reload"
            )

    def _dispatch(self, environ: Environ) -> Response:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "/") or "/"
        query = {key: values[-1] for key, values in parse_qs(environ.get("QUERY_STRING", "")).items()}
        methods = set()
        for route_method, pattern, handler in self.routes:
            matched = pattern.fullmatch(path)
            if matched is None:
                continue
            methods.add(route_method)
            if route_method != method and not (method == "HEAD" and route_method == "GET"):
                continue
            if method == "POST":
                form = self._form(environ)
                self._check_post(environ, form)
                return handler(form=form, **matched.groupdict())
            return handler(query=query, **matched.groupdict())
        if methods:
            response = self._page(HTTPStatus.METHOD_NOT_ALLOWED, "refused.html", title="Not allowed", why=method)
            response.headers.append(("Allow", ", ".join(sorted(methods))))
            return response
        return self._page(HTTPStatus.NOT_FOUND, "refused.html", title="Not found", why=f"no page at {path}")

    def _form(self, environ: Environ) -> dict[str, str]:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > MAX_FORM_BYTES:
            raise Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "the form is too large")
        data = environ["wsgi.input"].read(length).decode("utf-8", errors="replace") if length > 0 else ""
        return {key: values[-1] for key, values in parse_qs(data).items()}

    # --- rendering -----------------------------------------------------------------------------------------

    def _page(self, http_status: int, template: str, **context: Any) -> Response:
        body = self.templates.get_template(template).render(**context)
        return Response(http_status, body.encode())

    def _api_failed(self, error: ApiError, title: str) -> Response:
        status = HTTPStatus.BAD_GATEWAY if error.unavailable else HTTPStatus.OK
        if error.code == "not_found":
            status = HTTPStatus.NOT_FOUND
        return self._page(status, "api_error.html", title=title, error=error)

    # --- pages ---------------------------------------------------------------------------------------------

    def _overview(self) -> tuple[Overview | None, ApiError | None]:
        try:
            return self.overview.get(), None
        except ApiError as error:
            return None, error

    def overview_page(self, query: dict[str, str]) -> Response:
        overview, error = self._overview()
        return self._page(
            HTTPStatus.OK,
            "overview.html",
            title="Overview",
            nav="overview",
            overview=overview,
            error=error,
            refresh=self.refresh_seconds,
            live_statuses=LIVE_STATUSES,
        )

    def overview_fragment(self, query: dict[str, str]) -> Response:
        overview, error = self._overview()
        return self._page(
            HTTPStatus.OK if error is None else HTTPStatus.BAD_GATEWAY,
            "overview_body.html",
            overview=overview,
            error=error,
            live_statuses=LIVE_STATUSES,
        )

    def list_page(self, query: dict[str, str]) -> Response:
        status = query.get("status", "")
        if status and status not in STATUSES:
            raise Refused(HTTPStatus.BAD_REQUEST, f"status must be one of {', '.join(STATUSES)}")
        try:
            limit = int(query.get("limit", PAGE_SIZES[0]))
        except ValueError:
            limit = 0
        if limit not in PAGE_SIZES:
            raise Refused(HTTPStatus.BAD_REQUEST, f"limit must be one of {', '.join(map(str, PAGE_SIZES))}")
        cursor = query.get("cursor") or None
        page, error = None, None
        held: set[str] = set()
        if status:
            try:
                page = self.client.emails(status, limit, cursor)
                if status == "retrying" and page.items:
                    held = read_stats(self.client).held_ids
            except ApiError as failure:
                error = failure
        return self._page(
            HTTPStatus.OK if error is None else HTTPStatus.BAD_GATEWAY,
            "list.html",
            title=f"{status.capitalize()} emails" if status else "Emails",
            nav="emails",
            status=status,
            limit=limit,
            cursor=cursor,
            page=page,
            held=held,
            error=error,
            page_sizes=PAGE_SIZES,
        )

    def email_page(self, query: dict[str, str], email_id: str) -> Response:
        try:
            email = self.client.email(email_id)
        except ApiError as error:
            return self._api_failed(error, f"Email {email_id}")
        held = is_held(str(email.get("status")), email.get("history") or [])
        return self._page(
            HTTPStatus.OK,
            "email.html",
            title=f"Email {email_id}",
            nav="emails",
            email=email,
            timeline=timeline(email),
            outbox=read_outbox(self.outbox, email_id),
            outbox_configured=self.outbox is not None,
            # SES words some account errors as a rejection (MessageRejected: not verified): the sender held it.
            last_error_class=SendOutcome.ACCOUNT.value
            if held
            else error_class(str((email.get("last_error") or {}).get("code") or "")),
            held=held,
            cancellable=email.get("status") in CANCELLABLE,
            retryable=email.get("status") == "failed",
        )

    def eml_file(self, query: dict[str, str], email_id: str) -> Response:
        copy = read_outbox(self.outbox, email_id)
        if copy is None:
            raise Refused(HTTPStatus.NOT_FOUND, f"the outbox holds no message {email_id}")
        return Response(
            HTTPStatus.OK,
            copy.path.read_bytes(),
            [("Content-Disposition", f'attachment; filename="{email_id}.eml"')],
            content_type="message/rfc822",
        )

    def confirm_action(self, query: dict[str, str], email_id: str, action: str) -> Response:
        try:
            email = self.client.email(email_id)
        except ApiError as error:
            return self._api_failed(error, f"Email {email_id}")
        return self._page(
            HTTPStatus.OK,
            "confirm_email.html",
            title=f"{action.capitalize()} this email?",
            nav="emails",
            email=email,
            action=action,
        )

    def do_action(self, form: dict[str, str], email_id: str, action: str) -> Response:
        try:
            outcome = self.client.cancel(email_id) if action == "cancel" else self.client.retry(email_id)
        except ApiError as error:
            return self._page(
                HTTPStatus.OK,
                "answer.html",
                title="The API refused",
                nav="emails",
                action=action,
                email_id=email_id,
                error=error,
                outcome=None,
            )
        done = "Cancelled" if action == "cancel" else "Queued again"
        return self._page(
            HTTPStatus.OK,
            "answer.html",
            title=done,
            nav="emails",
            action=action,
            email_id=email_id,
            error=None,
            outcome=outcome,
        )

    def search_page(self, query: dict[str, str]) -> Response:
        wanted = query.get("q", "").strip()
        if is_email_id(wanted.upper()):
            return Response(HTTPStatus.SEE_OTHER, b"", [("Location", f"/emails/{wanted.upper()}")])
        found: list[dict[str, Any]] = []
        capped: list[str] = []
        error = None
        by_address = "@" in wanted
        if by_address:
            try:
                for status in STATUSES:
                    emails, more = self.client.all_emails(status, SEARCH_CAP)
                    found += [e for e in emails if wanted.lower() in str(e.get("to") or "").lower()]
                    if more:
                        capped.append(status)
            except ApiError as failure:
                error = failure
        found.sort(key=lambda email: str(email.get("id")), reverse=True)
        return self._page(
            HTTPStatus.OK,
            "search.html",
            title="Search",
            nav="search",
            q=wanted,
            by_address=by_address,
            found=found,
            capped=capped,
            cap=SEARCH_CAP,
            error=error,
        )

    def suppressions_page(self, query: dict[str, str]) -> Response:
        cursor = query.get("cursor") or None
        page, error = None, None
        try:
            page = self.client.suppressions(50, cursor)
        except ApiError as failure:
            error = failure
        return self._page(
            HTTPStatus.OK if error is None else HTTPStatus.BAD_GATEWAY,
            "suppressions.html",
            title="Suppressions",
            nav="suppressions",
            page=page,
            cursor=cursor,
            error=error,
        )

    def confirm_lift(self, query: dict[str, str]) -> Response:
        address = query.get("address", "").strip()
        if not address:
            raise Refused(HTTPStatus.BAD_REQUEST, "name the address to lift")
        return self._page(
            HTTPStatus.OK, "confirm_lift.html", title="Lift this suppression?", nav="suppressions", address=address
        )

    def do_lift(self, form: dict[str, str]) -> Response:
        address = form.get("address", "").strip()
        if not address:
            raise Refused(HTTPStatus.BAD_REQUEST, "name the address to lift")
        try:
            outcome = self.client.lift(address)
        except ApiError as error:
            return self._page(
                HTTPStatus.OK,
                "lifted.html",
                title="The API refused",
                nav="suppressions",
                address=address,
                error=error,
                outcome=None,
            )
        return self._page(
            HTTPStatus.OK,
            "lifted.html",
            title="Suppression lifted",
            nav="suppressions",
            address=address,
            error=None,
            outcome=outcome,
        )

    def static(self, query: dict[str, str], name: str) -> Response:
        if name not in STATIC:
            raise Refused(HTTPStatus.NOT_FOUND, f"no file {name}")
        return Response(HTTPStatus.OK, (HERE / "static" / name).read_bytes(), content_type=STATIC[name])
