from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.deps import MetricsDep, ServicesDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """Report that the process is up."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(services: ServicesDep) -> JSONResponse:
    """Report whether the catalog and models are ready to serve queries (503 while the generator loads)."""
    generator_ready = services.generator.is_ready
    body = {"status": "ready" if generator_ready else "loading", "catalog": "ok", "embedder": services.embedder.name,
            "generator": "ready" if generator_ready else "loading"}
    return JSONResponse(body, status_code=200 if generator_ready else 503)


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}})
def prometheus_metrics(metrics: MetricsDep) -> Response:
    """Expose Prometheus metrics; they carry knowledge base ids and counts, never names, keys or text."""
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
