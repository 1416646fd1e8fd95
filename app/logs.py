"""JSON log lines with the keyword fields that callers pass through `extra`, plus the current request's ids."""

import json
import logging
import re
from contextvars import ContextVar
from dataclasses import dataclass

_STANDARD_FIELDS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
# Tenant API keys start with "drk_"; one that slips into a message is masked before the line is written.
_API_KEY = re.compile(r"drk_[A-Za-z0-9_-]{4,}")


@dataclass
class RequestContext:
    """Ids of the request being served, filled in as authentication and routing learn them.

    The middleware puts one instance in a context variable. Dependencies run in worker threads that see a
    copy of the context, so they set fields on the shared instance rather than replacing the variable.
    """

    request_id: str
    tenant: str | None = None
    knowledge_base: str | None = None


current_request: ContextVar[RequestContext | None] = ContextVar("current_request", default=None)


def set_request_tenant(tenant_id: str) -> None:
    context = current_request.get()
    if context is not None:
        context.tenant = tenant_id


def set_request_knowledge_base(knowledge_base_id: str) -> None:
    context = current_request.get()
    if context is not None:
        context.knowledge_base = knowledge_base_id


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"), "level": record.levelname,
                 "logger": record.name, "message": _API_KEY.sub("drk_[redacted]", record.getMessage())}
        context = current_request.get()
        if context is not None:
            entry["request_id"] = context.request_id
            if context.tenant is not None:
                entry["tenant"] = context.tenant
            if context.knowledge_base is not None:
                entry["knowledge_base"] = context.knowledge_base
        # Fields passed explicitly through `extra` take precedence over the request's.
        entry.update({key: value for key, value in vars(record).items() if key not in _STANDARD_FIELDS})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
