"""Every call the console makes to the mailqueue API, in one place.

The console holds the user's credentials (SigV4 signing or a JWT) through the CLI's :class:`Api`, so the
browser never does. Each method here is one API route; the pages use only these, so a change of the
API (a new listing, a new field) is adapted here.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from mailqueue_dev.cli import BATCH_SIZE, EXIT_UNAVAILABLE, STATUSES, Api, Failure

__all__ = ["STATUSES", "ApiError", "ConsoleClient", "Page"]


@dataclass
class ApiError(Exception):
    """The API refused a call (4xx) or could not answer (5xx, unreachable): its answer as it gave it."""

    message: str
    body: Any = None
    unavailable: bool = False

    @property
    def code(self) -> str | None:
        """The error's code in the API's error shape (``not_found``, ``status_conflict``, …)."""
        error = self.body.get("error") if isinstance(self.body, dict) else None
        return str(error["code"]) if isinstance(error, dict) and error.get("code") else None

    def __str__(self) -> str:
        return self.message


@dataclass
class Page:
    items: list[dict[str, Any]]
    cursor: str | None = None


@dataclass
class Outcome:
    """A successful action's answer: the HTTP status and the body as the API gave them."""

    status: int
    body: Any = None


@dataclass
class ConsoleClient:
    api: Api
    # The CLI's transport is one requests.Session: the console's threads take turns with it.
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def url(self) -> str:
        return self.api.url

    def _call(self, method: str, path: str, query: dict[str, Any] | None = None) -> Outcome:
        try:
            with self._lock:
                answer = self.api.call(method, path, query=query)
        except Failure as failure:
            raise ApiError(failure.message, failure.body, failure.code == EXIT_UNAVAILABLE) from None
        return Outcome(answer.status, answer.body)

    # --- emails ---------------------------------------------------------------------------------------

    def email(self, email_id: str) -> dict[str, Any]:
        body: dict[str, Any] = self._call("GET", f"/emails/{quote(email_id, safe='')}").body
        return body

    def emails(self, status: str, limit: int = 20, cursor: str | None = None) -> Page:
        """One page of emails in ``status``, in the API's order (newest first; scheduled, retrying: next due first)."""
        body = self._call("GET", "/emails", {"status": status, "limit": limit, "cursor": cursor}).body
        return Page(list(body.get("emails") or []), body.get("cursor"))

    def all_emails(self, status: str, cap: int) -> tuple[list[dict[str, Any]], bool]:
        """The first emails in ``status``, up to about ``cap`` of them; True when there may be more.

        A page of a status the API lists by scanning can be short, even empty, and still go on (see the
        API's list route): the requests are capped as well, at twice what ``cap`` emails take.
        """
        found: list[dict[str, Any]] = []
        cursor: str | None = None
        requests = 0
        while True:
            page = self.emails(status, BATCH_SIZE, cursor)
            requests += 1
            found += page.items
            cursor = page.cursor
            if not cursor:
                return found, False
            if len(found) >= cap or requests >= 2 * max(1, cap // BATCH_SIZE):
                return found, True

    def cancel(self, email_id: str) -> Outcome:
        return self._call("DELETE", f"/emails/{quote(email_id, safe='')}")

    def retry(self, email_id: str) -> Outcome:
        return self._call("POST", f"/emails/{quote(email_id, safe='')}/retry")

    # --- figures --------------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any] | None:
        """GET /stats: SendRate, dead letters, held emails; None from an API without the route (an older stack)."""
        try:
            body: dict[str, Any] = self._call("GET", "/stats").body
        except ApiError as error:
            if error.code in {"not_found", "method_not_allowed"}:
                return None
            raise
        return body

    # --- suppression list -----------------------------------------------------------------------------

    def suppressions(self, limit: int = 50, cursor: str | None = None) -> Page:
        body = self._call("GET", "/suppressions", {"limit": limit, "cursor": cursor}).body
        return Page(list(body.get("suppressions") or []), body.get("cursor"))

    def lift(self, address: str) -> Outcome:
        # Quoted whole, so that a + or a / in the address reaches the route as it is.
        return self._call("DELETE", f"/suppressions/{quote(address.strip(), safe='@')}")
