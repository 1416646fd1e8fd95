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
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from app.schemas import PATTERN_RULES
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

    @app.exception_handler(RequestValidationError)
    async def handle_validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        endpoint = request.scope.get("endpoint")
        errors = [{"loc": list(item["loc"]), "type": item["type"], "msg": describe_validation_error(item, endpoint)}
                  for item in error.errors()]
        detail = ". ".join(item["msg"] for item in errors)
        content = {"detail": detail, "errors": errors}
        try:
            body = json.dumps(content, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            # The message echoes a lone surrogate such as "\ud800", which UTF-8 cannot encode, so send the
            # JSON with every non-ASCII character escaped instead.
            body = json.dumps(content).encode("ascii")
        return Response(body, status_code=422, media_type="application/json")

    @app.exception_handler(GraphIndexOff)
    async def handle_graph_index_off(request: Request, error: GraphIndexOff) -> JSONResponse:
        # The request names a graph feature that this deployment turned off, so the client has to change it.
        return JSONResponse({"detail": str(error)}, status_code=InvalidInput.status_code)


# The first part of a FastAPI error location names the source of the value, and the rest is the field's path.
_SOURCES = ("body", "query", "path", "header", "cookie")
MAX_SHOWN_INPUT_CHARS = 60

# The expected type of a value, in words, by pydantic error type.
_EXPECTED_TYPES = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number", "string_type": "a string",
    "bool_type": "true or false", "bool_parsing": "true or false", "list_type": "a JSON array",
    "dict_type": "a JSON object", "model_type": "a JSON object", "model_attributes_type": "a JSON object",
}
_RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}
_LENGTH_ERRORS = {"string_too_short", "string_too_long", "too_short", "too_long"}
# The keyword arguments of pydantic's Field() that limit a value, as its constraint metadata names them.
_CONSTRAINTS = ("gt", "ge", "lt", "le", "multiple_of", "min_length", "max_length", "pattern")


def describe_validation_error(error: dict[str, Any], endpoint: Callable | None) -> str:
    """Build the message for one pydantic error of a request, naming the field and what to send instead.

    The message comes from the error type and its context, completed with the field's declared limits, so that
    a value under the minimum also learns the maximum. Types without a rule here keep pydantic's message.
    """
    kind, loc = error["type"], tuple(error["loc"])
    name = format_location(loc)
    got = format_input(error.get("input"), quoted=loc[0] == "body")
    # The declared limits override ctx because they keep the numbers as written, where ctx shows lt=1 as 1.0.
    limits = {**(error.get("ctx") or {}), **_declared_limits(endpoint, loc)}
    if kind == "extra_forbidden":
        # A key is named as sent, so an empty key shows as '' rather than as the whole body.
        return _unknown_field_message(str(loc[-1]) if len(loc) > 1 else name, loc, _body_model(endpoint))
    if kind == "json_invalid":
        reason = limits.get("error", "invalid JSON")
        return f"request body is not valid JSON ({reason} at character {loc[-1]}); send one JSON object"
    if kind == "missing":
        if loc == ("body",):
            return "request body is missing; send a JSON object with Content-Type: application/json"
        where = "field" if loc[0] == "body" else f"{loc[0]} parameter"
        return f"missing required {where} {name!r}"
    if kind in ("model_attributes_type", "dict_type", "model_type") and loc == ("body",):
        return "request body must be a JSON object, sent with Content-Type: application/json"
    if kind in _RANGE_ERRORS or (kind == "finite_number" and _range_rule(limits)):
        return f"{name} must be {_range_rule(limits)}; got {got}"
    if kind == "multiple_of":
        return f"{name} must be a multiple of {limits['multiple_of']}; got {got}"
    if kind in _LENGTH_ERRORS:
        return _length_message(name, kind, limits, error.get("input"))
    if kind in ("literal_error", "enum"):
        # pydantic lists the choices as "'a', 'b' or 'c'".
        expected = limits.get("expected", "")
        if " or " in expected:
            return f"{name} must be one of {expected.replace(' or ', ', ')}; got {got}"
        return f"{name} must be {expected}; got {got}"
    if kind == "string_pattern_mismatch":
        rule = PATTERN_RULES.get(limits.get("pattern", ""))
        if rule is not None:
            return f"invalid {name} {got}; use {rule}"
        return f"{name} must match the regular expression {limits.get('pattern')!r}; got {got}"
    if kind == "string_unicode":
        return f"{name} must be valid Unicode text, without lone surrogates such as \\ud800; got {got}"
    if kind in _EXPECTED_TYPES:
        return f"{name} must be {_EXPECTED_TYPES[kind]}; got {got}"
    message = error["msg"].removeprefix("Value error, ")
    # A field validator's message already names its field.
    if not message.startswith(name):
        message = f"{name}: {message}"
    return f"{message}; got {got}"


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


def format_input(value: Any, *, quoted: bool = True) -> str:
    """Format a client's value as JSON, cut short so that a long text does not fill the message.

    Query, path and header values are always strings, so with quoted=False a string is shown as sent.
    """
    if isinstance(value, str) and not quoted:
        text = value
    else:
        try:
            text = json.dumps(value, ensure_ascii=False)
            # A lone surrogate cannot reach the client as UTF-8, so show it as the escape the client sent.
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = json.dumps(value)
        except (TypeError, ValueError):
            text = repr(value)
    return text if len(text) <= MAX_SHOWN_INPUT_CHARS else text[:MAX_SHOWN_INPUT_CHARS] + "..."


def _range_rule(limits: dict[str, Any]) -> str:
    if "ge" in limits and "le" in limits:
        return f"between {limits['ge']} and {limits['le']}"
    bounds = []
    if "ge" in limits:
        bounds.append(f"at least {limits['ge']}")
    if "gt" in limits:
        bounds.append(f"greater than {limits['gt']}")
    if "le" in limits:
        bounds.append(f"at most {limits['le']}")
    if "lt" in limits:
        bounds.append(f"less than {limits['lt']}")
    return " and ".join(bounds)


def _length_message(name: str, kind: str, limits: dict[str, Any], value: Any) -> str:
    low, high = limits.get("min_length"), limits.get("max_length")
    if low is not None and high is not None:
        rule, last = f"between {low} and {high}", high
    elif low is not None:
        rule, last = f"at least {low}", low
    else:
        rule, last = f"at most {high}", high
    actual = limits.get("actual_length")
    if actual is None and isinstance(value, (str, list, dict)):
        actual = len(value)
    unit = "character" if kind.startswith("string_") else "item"
    if last != 1:
        unit += "s"
    return f"{name} must have {rule} {unit}; got {actual}"


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


def _declared_field(endpoint: Callable | None, loc: tuple) -> FieldInfo | None:
    """Return the declaration of a top-level body field, or of a parameter of the endpoint itself, or None.

    Parameters declared by dependencies, and fields inside lists, are not found, so their messages rely on the
    error's own context.
    """
    if endpoint is None or len(loc) != 2:
        return None
    source, name = loc
    if source == "body":
        model = _body_model(endpoint)
        return model.model_fields.get(name) if model is not None else None
    parameter = inspect.signature(endpoint, eval_str=True).parameters.get(name)
    if parameter is None:
        return None
    if isinstance(parameter.default, FieldInfo):
        return parameter.default
    if typing.get_origin(parameter.annotation) is typing.Annotated:
        return next((item for item in typing.get_args(parameter.annotation)[1:] if isinstance(item, FieldInfo)), None)
    return None


def _declared_limits(endpoint: Callable | None, loc: tuple) -> dict[str, Any]:
    declared = _declared_field(endpoint, loc)
    limits = {}
    for item in declared.metadata if declared is not None else []:
        for constraint in _CONSTRAINTS:
            value = getattr(item, constraint, None)
            if value is not None:
                limits[constraint] = value
    return limits


def _unknown_field_message(name: str, loc: tuple, model: type[BaseModel] | None) -> str:
    # Only top-level fields are listed, because every request model is flat.
    if model is None or len(loc) != 2:
        return f"unknown field {name!r}; remove it"
    valid = sorted(model.model_fields)
    closest = difflib.get_close_matches(name, valid, n=1)
    hint = f" (did you mean {closest[0]!r}?)" if closest else ""
    return f"unknown field {name!r}{hint}; valid fields are: {', '.join(valid)}"
