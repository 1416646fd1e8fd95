"""Domain errors and their one mapping to HTTP status codes."""

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from storage.knowledge_base import GraphIndexOff

logger = logging.getLogger(__name__)


class DomainError(Exception):
    status_code = 400

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers


class InvalidInput(DomainError):
    status_code = 422


class Unauthorized(DomainError):
    status_code = 401


class Forbidden(DomainError):
    status_code = 403


class NotFound(DomainError):
    status_code = 404


class Conflict(DomainError):
    status_code = 409


class PayloadTooLarge(DomainError):
    status_code = 413


class UnsupportedMediaType(DomainError):
    status_code = 415


class TooManyRequests(DomainError):
    """A per-key limit was reached; the error carries a Retry-After header."""

    status_code = 429


class NotReady(DomainError):
    status_code = 503


class BackboneFailed(DomainError):
    """A generator backbone, local or remote, failed while answering."""

    status_code = 502


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def handle_domain_error(request: Request, error: DomainError) -> JSONResponse:
        if error.status_code >= 500:
            logger.warning("request failed", extra={"path": request.url.path, "error": error.message})
        headers = dict(error.headers or {})
        if isinstance(error, Unauthorized):
            headers.setdefault("WWW-Authenticate", "Bearer")
        return JSONResponse({"detail": error.message}, status_code=error.status_code, headers=headers)

    @app.exception_handler(GraphIndexOff)
    async def handle_graph_index_off(request: Request, error: GraphIndexOff) -> JSONResponse:
        # The request names a graph feature that this deployment turned off, so the client has to change it.
        return JSONResponse({"detail": str(error)}, status_code=InvalidInput.status_code)
