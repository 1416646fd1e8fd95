from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.deps import ServicesDep

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
