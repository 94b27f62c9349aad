"""The error hierarchy and its mapping to the spec's error JSON, in one place.

Every failure a client can cause is raised as a ``LlamacyError`` subclass; the HTTP layer
renders it as ``{"error": {"code", "message", "type"}}`` with ``status`` as the HTTP code.
"""
from __future__ import annotations


class LlamacyError(Exception):
    """Root of every error llamacy raises on purpose."""

    status: int = 500
    type: str = "server_error"
    reason: str = ""       # a short label for llamacy:requests_rejected_total (default: the type)
    headers: tuple[tuple[str, str], ...] = ()   # extra HTTP headers for the error response

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status

    def to_json(self) -> dict:
        return {"error": {"code": self.status, "message": self.message, "type": self.type}}


class InvalidRequestError(LlamacyError):
    """The client sent something malformed or out of range (400)."""

    status = 400
    type = "invalid_request_error"


class GrammarError(InvalidRequestError):
    """A GBNF grammar that libllama could not parse."""

    def __init__(self, message: str = "Failed to parse grammar") -> None:
        super().__init__(message)


class UnsupportedSchemaError(InvalidRequestError):
    """A JSON Schema feature the schema-to-grammar converter does not handle."""


class ChatTemplateError(InvalidRequestError):
    """A chat template failed to render the given messages."""


class AuthenticationError(LlamacyError):
    status = 401
    type = "authentication_error"


class NotFoundError(LlamacyError):
    status = 404
    type = "not_found_error"


class NotSupportedError(LlamacyError):
    """An endpoint or feature disabled by the server's flags (501, as the spec says)."""

    status = 501
    type = "not_supported_error"


class FeatureDisabledError(LlamacyError):
    """A feature the server was not started with, refused as today's llama-server does (403)."""

    status = 403
    type = "feature_disabled"


class BadGatewayError(LlamacyError):
    """A request this server made for the client failed (502)."""

    status = 502
    type = "server_error"
    reason = "bad_gateway"


class PayloadTooLargeError(LlamacyError):
    """A request body over --max-body-size (413)."""

    status = 413
    type = "invalid_request_error"
    reason = "body_too_large"


class UnavailableError(LlamacyError):
    status = 503
    type = "unavailable_error"


class QueueFullError(UnavailableError):
    """More requests waiting than --queue-max allows: try again shortly (503 + Retry-After)."""

    reason = "queue_full"
    headers = (("Retry-After", "1"),)


class InsufficientStorageError(LlamacyError):
    """No space left where a file had to be written (507)."""

    status = 507
    type = "server_error"
    reason = "insufficient_storage"


class ModelLoadError(LlamacyError):
    """A model file that is missing or that libllama refused to load."""


class DecodeError(LlamacyError):
    """``llama_decode`` returned non-zero; ``code`` is its return value."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class NoKvSlotError(DecodeError):
    """Return code 1: no KV cache slot for the batch (retry with a smaller batch)."""


class DecodeAbortedError(DecodeError):
    """Return code 2: decode aborted by the abort callback."""
