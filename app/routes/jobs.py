from fastapi import APIRouter

from app.deps import ServicesDep, TenantDep
from app.errors import NotFound
from app.schemas import JobError, JobPublic

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.get("/{job_id}", response_model=JobPublic)
def get_job(job_id: str, services: ServicesDep, tenant: TenantDep) -> JobPublic:
    """Show an ingestion job's progress and per-item errors."""
    job = services.catalog.get_job(job_id)
    if job is None or job.tenant_id != tenant.id:
        raise NotFound(f"job {job_id!r} not found")
    return JobPublic(id=job.id, knowledge_base_id=job.knowledge_base_id, status=job.status, total=job.total,
                     processed=job.processed, failed=job.failed, unchanged=job.unchanged,
                     errors=[JobError(**error) for error in job.errors],
                     documents_per_second=job.documents_per_second, created_at=job.created_at,
                     started_at=job.started_at, updated_at=job.updated_at)
