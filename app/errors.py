"""Domain errors and their one mapping to HTTP status codes, and the messages of request validation errors."""

import difflib
import inspect
import json
import logging
import typing
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

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

    @app.exception_handler(RequestValidationError)
    async def handle_validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        endpoint = request.scope.get("endpoint")
        errors = [{"loc": list(item["loc"]), "type": item["type"], "msg": describe_validation_error(item, endpoint)}
                  for item in error.errors()]
        detail = ". ".join(item["msg"] for item in errors)
        return JSONResponse({"detail": detail, "errors": errors}, status_code=422)


# The first part of a FastAPI error location names the source of the value, and the rest is the field's path.
_SOURCES = ("body", "query", "path", "header", "cookie")
MAX_SHOWN_INPUT_CHARS = 60


def describe_validation_error(error: dict[str, Any], endpoint: Callable | None) -> str:
    """Build the message for one pydantic error of a request, naming the field and what to send instead."""
    kind, loc = error["type"], tuple(error["loc"])
    name = format_location(loc)
    if kind == "extra_forbidden":
        return _unknown_field_message(name, loc, _body_model(endpoint))
    if kind == "json_invalid":
        reason = (error.get("ctx") or {}).get("error", "invalid JSON")
        return f"request body is not valid JSON ({reason} at character {loc[-1]}); send one JSON object"
    if kind == "missing":
        if loc == ("body",):
            return "request body is missing; send a JSON object with Content-Type: application/json"
        return f"{name} is required"
    if kind in ("model_attributes_type", "dict_type", "model_type") and loc == ("body",):
        return "request body must be a JSON object, sent with Content-Type: application/json"
    message = error["msg"].removeprefix("Value error, ")
    # A field validator's message already names its field.
    if not message.startswith(name):
        message = f"{name}: {message}"
    return f"{message}; got {format_input(error.get('input'))}"


def format_location(loc: Sequence[Any]) -> str:
    """Format an error location as the client spells the field, e.g. 'retrievers[1]' for ('body', 'retrievers', 1)."""
    parts = loc[1:] if loc and loc[0] in _SOURCES else loc
    name = ""
    for part in parts:
        if isinstance(part, int):
            name += f"[{part}]"
        else:
            name += f".{part}" if name else str(part)
    return name or "request body"


def format_input(value: Any) -> str:
    """Format a client's value as JSON, cut short so that a long text does not fill the message."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= MAX_SHOWN_INPUT_CHARS else text[:MAX_SHOWN_INPUT_CHARS] + "..."


def _body_model(endpoint: Callable | None) -> type[BaseModel] | None:
    """Return the pydantic model that the endpoint reads its JSON body into, or None when it has none."""
    if endpoint is None:
        return None
    for parameter in inspect.signature(endpoint, eval_str=True).parameters.values():
        annotation = parameter.annotation
        if typing.get_origin(annotation) is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return annotation
    return None


def _unknown_field_message(name: str, loc: tuple, model: type[BaseModel] | None) -> str:
    # Only top-level fields are listed, because every request model is flat.
    if model is None or len(loc) != 2:
        return f"unknown field {name!r}; remove it"
    valid = sorted(model.model_fields)
    closest = difflib.get_close_matches(name, valid, n=1)
    hint = f" (did you mean {closest[0]!r}?)" if closest else ""
    return f"unknown field {name!r}{hint}; valid fields are: {', '.join(valid)}"
