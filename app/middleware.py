"""ASGI middleware: request ids, access logs and request metrics; request body size limits."""

import logging
import re
import time
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.logs import RequestContext, current_request
from app.metrics import UNMATCHED_ROUTE, Metrics

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
# A client's request id is reused only when it is short and plain, so it cannot forge log fields.
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# The one route that accepts bulk bodies; it gets DOMAINRAG_MAX_UPLOAD_BYTES instead of the JSON limit.
_UPLOAD_PATH = re.compile(r"^/v1/knowledge-bases/[^/]+/documents/?$")


class RequestContextMiddleware:
    """Give each request an id, echo it in X-Request-ID, log one line per request and count it."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        supplied = Headers(scope=scope).get(REQUEST_ID_HEADER, "")
        request_id = supplied if _CLIENT_REQUEST_ID.fullmatch(supplied) else uuid.uuid4().hex
        context = RequestContext(request_id=request_id)
        token = current_request.set(context)
        status = 500
        started = time.perf_counter()

        async def send_with_request_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_request_id)
        except Exception:
            status = 500
            logger.exception("request failed with an unhandled error")
            raise
        finally:
            seconds = time.perf_counter() - started
            # The route template ("/v1/knowledge-bases/{kb}/search"), never the raw path, keeps labels bounded.
            route = getattr(scope.get("route"), "path", UNMATCHED_ROUTE)
            self.metrics.observe_request(method=scope["method"], route=route, status=status, seconds=seconds)
            logger.info("request finished", extra={"method": scope["method"], "route": route, "status": status,
                                                   "ms": round(1000 * seconds, 2)})
            current_request.reset(token)


class BodyLimitMiddleware:
    """Reject request bodies over the limit with 413, by Content-Length and while the body streams in."""

    def __init__(self, app: ASGIApp, *, max_json_body_bytes: int, max_upload_bytes: int) -> None:
        self.app = app
        self.max_json_body_bytes = max_json_body_bytes
        self.max_upload_bytes = max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        if scope["method"] == "POST" and _UPLOAD_PATH.match(scope["path"]):
            limit, setting, advice = self.max_upload_bytes, "DOMAINRAG_MAX_UPLOAD_BYTES", \
                "split the upload into several requests"
        else:
            limit, setting, advice = self.max_json_body_bytes, "DOMAINRAG_MAX_JSON_BODY_BYTES", \
                "send a smaller request"

        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            response = JSONResponse(
                {"detail": f"request body of {declared} bytes exceeds the limit of {limit} bytes ({setting}); "
                           f"{advice}"},
                status_code=413)
            await response(scope, receive, send)
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # FastAPI re-raises an HTTPException met while reading the body, where any other error
                    # would become a 400, so the client gets this 413.
                    raise HTTPException(413, f"request body exceeds the limit of {limit} bytes ({setting}); {advice}")
            return message

        await self.app(scope, limited_receive, send)
