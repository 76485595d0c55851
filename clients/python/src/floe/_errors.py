"""Errors: every failed request raises a FloeError carrying the HTTP status,
the server's error kind and, for bad input, the field it names."""

from __future__ import annotations

from typing import Any, Optional


class FloeError(Exception):
    """A request Floe refused or could not answer.

    ``status`` is the HTTP status (None when no answer came), ``kind`` the
    server's error kind (``bad_request``, ``not_found``, ``conflict``,
    ``too_large``, ``unavailable`` …), ``field`` the request field a bad
    input names (``rows[3].vector``), ``request_id`` the server's
    ``x-request-id`` for its logs.
    """

    def __init__(
        self,
        message: str,
        *,
        status: Optional[int] = None,
        kind: Optional[str] = None,
        field: Optional[str] = None,
        request_id: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.kind = kind
        self.field = field
        self.request_id = request_id

    def __str__(self) -> str:
        where = f" ({self.field})" if self.field else ""
        status = f"{self.status} " if self.status is not None else ""
        kind = f"{self.kind}: " if self.kind else ""
        return f"{status}{kind}{self.message}{where}"


class BadRequestError(FloeError):
    """400: the request is wrong; ``field`` says where."""


class AuthenticationError(FloeError):
    """401: the API key is missing, malformed, unknown or revoked."""


class PermissionDeniedError(FloeError):
    """403: the key lacks the role or the collection."""


class NotFoundError(FloeError):
    """404: no such collection, row or key."""


class ConflictError(FloeError):
    """409: a different collection holds the name, or a request_id was reused
    with another body."""


class ConditionFailedError(ConflictError):
    """409 ``condition_failed``: an ``if_version`` did not hold; nothing was
    written. ``field`` names the row (``rows[0].if_version``)."""


class PayloadTooLargeError(FloeError):
    """413: the request or its encoded batch is too big; send fewer rows."""


class UnavailableError(FloeError):
    """503: the log or the object store did not answer; retried
    automatically before it is raised."""


class ServerError(FloeError):
    """Any other 5xx: a bug on the server's side."""


class FloeConnectionError(FloeError):
    """No answer: the connection failed or timed out after every retry."""


_BY_STATUS = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    503: UnavailableError,
}


def error_from_response(status: int, body: Any, request_id: Optional[str]) -> FloeError:
    """The exception for an error answer: Floe's ``{"error": {...}}`` body, or
    whatever a proxy (API Gateway, a load balancer) sent instead."""
    kind = field = None
    message = f"HTTP {status}"
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        kind = err.get("kind")
        field = err.get("field")
        message = err.get("message") or message
    elif isinstance(body, dict) and "message" in body:
        message = str(body["message"])
    elif isinstance(body, str) and body.strip():
        message = body.strip()[:500]
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else FloeError)
    if kind == "condition_failed":
        cls = ConditionFailedError
    return cls(message, status=status, kind=kind, field=field, request_id=request_id)
