"""The project's one root exception and its shallow subclasses.

Each class carries the stable error ``code`` and HTTP ``status`` that the API
puts in the error envelope. Exceptions become HTTP responses in one place
(``api.errors``), job errors in one place (the Celery task wrapper) and node
errors at the engine's per-node step.
"""

from __future__ import annotations

from typing import Any

MAX_MESSAGE_CHARS = 1000


class PackageRepoError(Exception):
    """Root of every error this project raises on purpose."""

    code = "INTERNAL_ERROR"
    status = 500

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        if len(message) > MAX_MESSAGE_CHARS:
            # Messages may quote input (an expression's operand, a value);
            # a bounded message keeps job records and responses bounded.
            message = message[: MAX_MESSAGE_CHARS - 1] + "…"
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.details = details or []

    def to_dict(self) -> dict[str, Any]:
        """The ``error`` object of the envelope (and of a failed job)."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


class InvalidRequest(PackageRepoError):
    """Raised when a request body, query or header is malformed."""

    code = "INVALID_REQUEST"
    status = 400


class CoordinateInvalid(PackageRepoError):
    """Raised when an artifact coordinate or path segment is not acceptable."""

    code = "VALIDATION_ERROR"
    status = 400


class Unauthorized(PackageRepoError):
    """Raised when credentials or a token are missing, forged or expired."""

    code = "UNAUTHORIZED"
    status = 401


class Forbidden(PackageRepoError):
    """Raised when the caller lacks the scope an operation needs."""

    code = "FORBIDDEN"
    status = 403


class TenantMismatch(PackageRepoError):
    """Raised when X-Tenant-ID differs from the token's tenant."""

    code = "TENANT_MISMATCH"
    status = 403


class NotFound(PackageRepoError):
    """Raised when a job, artifact or route does not exist for this tenant."""

    code = "NOT_FOUND"
    status = 404


class WorkflowNotFound(PackageRepoError):
    """Raised when no bundled or tenant workflow has the requested name."""

    code = "WORKFLOW_NOT_FOUND"
    status = 404


class WorkflowChanged(PackageRepoError):
    """Raised when a job's workflow is no longer the document it was
    submitted with (its cache entry expired and the file was replaced)."""

    code = "WORKFLOW_CHANGED"
    status = 409


class AlreadyExists(PackageRepoError):
    """Raised when a write-once record (artifact, user) already exists."""

    code = "ALREADY_EXISTS"
    status = 409


class IdempotencyKeyReused(PackageRepoError):
    """Raised when an Idempotency-Key is reused with a different body."""

    code = "IDEMPOTENCY_KEY_REUSED"
    status = 422


class InvalidWorkflow(PackageRepoError):
    """Raised when a workflow document cannot be parsed at all."""

    code = "INVALID_WORKFLOW"
    status = 400


class WorkflowValidationFailed(PackageRepoError):
    """Raised when a parsed workflow breaks validation rules (see details)."""

    code = "WORKFLOW_VALIDATION_ERROR"
    status = 400


class WorkflowFailed(PackageRepoError):
    """Raised when a workflow fails while running."""

    code = "WORKFLOW_ERROR"
    status = 500


class BlobTooLarge(PackageRepoError):
    """Raised when an upload exceeds MAX_UPLOAD_BYTES."""

    code = "BLOB_TOO_LARGE"
    status = 413


class DigestMismatch(PackageRepoError):
    """Raised when an uploaded blob does not match the digest declared for it."""

    code = "DIGEST_MISMATCH"
    status = 400


class UnsupportedMediaType(PackageRepoError):
    """Raised when a body arrives with a content type the endpoint refuses."""

    code = "UNSUPPORTED_MEDIA_TYPE"
    status = 415


class RateLimited(PackageRepoError):
    """Raised when a tenant or client exceeds a rate limit."""

    code = "RATE_LIMITED"
    status = 429

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class QueueUnavailable(PackageRepoError):
    """Raised when Redis (broker or job store) cannot be reached."""

    code = "QUEUE_UNAVAILABLE"
    status = 503


class ExpressionFailed(PackageRepoError):
    """Raised when a ``{{ … }}`` expression is refused, too big, slow or fails.

    ``code`` is EXPRESSION_ERROR, EXPRESSION_SYNTAX, EXPRESSION_FORBIDDEN,
    EXPRESSION_TOO_LARGE or EXPRESSION_TIMEOUT.
    """

    code = "EXPRESSION_ERROR"
    status = 500


class NodeFailed(PackageRepoError):
    """Raised by a node implementation when its step fails.

    ``code`` and ``status`` may be set per raise, so ``logic.stop_and_error``
    and ``respond.error`` can end a job with their own code and status.
    """

    code = "NODE_ERROR"
    status = 500
