"""Every way an RPC can fail: a stable reason, its gRPC status code, and how it travels to the client.

The reason goes into the trailing metadata twice: as plain text (``facecloak-reason``) for
humans and proxies, and as a serialised ``facecloak.v1.ErrorInfo`` (``facecloak-error-bin``) for
clients that want the extra key/value details (e.g. ``retry_after_ms``). docs/server.md lists
every reason; tests/test_server_errors.py checks each one.
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc

from ..errors import FaceCloakError
from ..proto import enrollment_pb2 as pb

DOMAIN = "facecloak.v1"
REASON_KEY = "facecloak-reason"
ERROR_INFO_KEY = "facecloak-error-bin"
REQUEST_ID_KEY = "x-request-id"
MAX_MESSAGE_CHARS = 1024

C = grpc.StatusCode
REASONS: dict[str, grpc.StatusCode] = {
    # The request itself is wrong: retrying the same request cannot succeed.
    "UNDECODABLE_IMAGE": C.INVALID_ARGUMENT,
    "IMAGE_TOO_LARGE": C.INVALID_ARGUMENT,
    "NO_FACE": C.INVALID_ARGUMENT,
    "FACE_TOO_SMALL": C.INVALID_ARGUMENT,
    "BAD_OPTION": C.INVALID_ARGUMENT,
    "MALFORMED_REQUEST": C.INVALID_ARGUMENT,
    # Back-pressure: retry later.
    "QUEUE_FULL": C.RESOURCE_EXHAUSTED,
    "RATE_LIMITED": C.RESOURCE_EXHAUSTED,
    # The call's own lifetime.
    "DEADLINE_EXCEEDED": C.DEADLINE_EXCEEDED,
    "CANCELLED": C.CANCELLED,
    # Auth.
    "API_KEY_MISSING": C.UNAUTHENTICATED,
    "API_KEY_INVALID": C.UNAUTHENTICATED,
    # The server cannot serve right now.
    "MODELS_NOT_READY": C.UNAVAILABLE,
    "SHUTTING_DOWN": C.UNAVAILABLE,
    "ASSET_MISSING": C.UNAVAILABLE,
    # Bugs: logged with the request id (never with the photo).
    "INTERNAL": C.INTERNAL,
}


class ServiceError(Exception):
    """An RPC failure with a documented reason (the message is safe to show the caller)."""

    def __init__(self, reason: str, message: str, details: Mapping[str, str] | None = None) -> None:
        if reason not in REASONS:
            raise ValueError(f"undocumented error reason {reason!r}")
        if len(message) > MAX_MESSAGE_CHARS:  # status details travel in headers: keep them well under gRPC's 8 KiB
            message = message[: MAX_MESSAGE_CHARS - 3] + "..."
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.details = dict(details or {})

    @property
    def code(self) -> grpc.StatusCode:
        return REASONS[self.reason]

    @classmethod
    def from_exception(cls, exc: BaseException) -> "ServiceError":
        """Map a core error to its reason; anything unexpected becomes INTERNAL with a generic message."""
        if isinstance(exc, ServiceError):
            return exc
        if isinstance(exc, FaceCloakError) and exc.reason in REASONS:
            return cls(exc.reason, str(exc))
        return cls("INTERNAL", "internal error; quote the request id when reporting it")

    def trailing_metadata(self, request_id: str) -> tuple[tuple[str, str | bytes], ...]:
        info = pb.ErrorInfo(reason=self.reason, domain=DOMAIN, metadata=self.details)
        return (
            (REASON_KEY, self.reason),
            (ERROR_INFO_KEY, info.SerializeToString()),
            (REQUEST_ID_KEY, request_id),
        )


def abort(context: grpc.ServicerContext, error: ServiceError, request_id: str) -> None:
    """End the RPC with ``error`` (raises, as grpc's abort does)."""
    context.set_trailing_metadata(error.trailing_metadata(request_id))
    context.abort(error.code, error.message)
