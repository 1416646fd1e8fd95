import logging
import re
from typing import Literal

from fastapi import APIRouter, Query, Request, Response
from starlette.datastructures import UploadFile

from app.deps import ReadableKnowledgeBase, ServicesDep, UploadSlot, WritableKnowledgeBase
from app.errors import InvalidInput, NotFound, PayloadTooLarge, UnsupportedMediaType
from app.jobs import store_raw
from app.schemas import DocumentList, DocumentPublic, JobAccepted
from app.services import Services

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/knowledge-bases/{kb}/documents", tags=["documents"])

NDJSON_TYPES = {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines"}
# Starlette's multipart parser limits files per request to 1000 by default; bulk uploads send more.
MAX_FILES_PER_REQUEST = 10_000
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {limit} bytes "
                              "(DOMAINRAG_MAX_UPLOAD_BYTES); split the upload into several requests")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes (DOMAINRAG_MAX_UPLOAD_BYTES); "
                                  "split the upload into several requests")
        chunks.append(chunk)
    return b"".join(chunks)


def file_label(filename: str | None) -> str:
    """Turn a client's file name into a label: a relative path with no empty, '.' or '..' parts.

    The label names the document and never reaches the file system; storage paths come from the content hash.
    Keeping folders ('a/readme.md', 'b/readme.md') gives files of the same name in different folders their
    own documents.
    """
    name = _CONTROL_CHARACTERS.sub("", (filename or "").replace("\\", "/"))
    parts = [part.strip() for part in name.split("/")]
    label = "/".join(part for part in parts if part not in ("", ".", ".."))
    return label or "upload"


async def _multipart_items(request: Request, services: Services, knowledge_base_id: str) -> list[dict]:
    limit = services.settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {limit} bytes "
                              "(DOMAINRAG_MAX_UPLOAD_BYTES); split the upload into several requests")
    form = await request.form(max_files=MAX_FILES_PER_REQUEST, max_fields=MAX_FILES_PER_REQUEST)
    uploads = [value for key, value in form.multi_items() if key == "files" and isinstance(value, UploadFile)]
    if not uploads:
        raise InvalidInput("multipart upload has no files; send each file in a form field named 'files'")
    items = []
    for upload in uploads:
        data = await upload.read()
        if len(data) > limit:
            raise PayloadTooLarge(f"file {upload.filename!r} is {len(data)} bytes, over the limit of {limit} bytes")
        source = file_label(upload.filename)
        items.append({"source": source, "raw": store_raw(services.settings.data_dir, knowledge_base_id, data),
                      "kind": "file"})
    return items


@router.post("", status_code=202, response_model=JobAccepted, dependencies=[UploadSlot])
async def upload_documents(
    request: Request, knowledge_base: WritableKnowledgeBase, services: ServicesDep,
    csv_mode: Literal["row", "file"] = Query("row", description="CSV files: one document per 'row', or one per 'file'."),
) -> JobAccepted:
    """Upload files (multipart field 'files') or an NDJSON body; ingestion runs as a background job."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in NDJSON_TYPES:
        body = await _read_body(request, services.settings.max_upload_bytes)
        if not body.strip():
            raise InvalidInput("NDJSON body is empty; send one JSON document per line")
        items = [{"source": "upload.ndjson", "raw": store_raw(services.settings.data_dir, knowledge_base.id, body),
                  "kind": "ndjson"}]
    elif content_type == "multipart/form-data":
        items = await _multipart_items(request, services, knowledge_base.id)
    else:
        raise UnsupportedMediaType(f"unsupported Content-Type {content_type or '(none)'!r}; send multipart/form-data "
                                   "with a 'files' field, or application/x-ndjson")
    job = services.catalog.create_job(tenant_id=knowledge_base.tenant_id, knowledge_base_id=knowledge_base.id,
                                      items=items, options={"csv_mode": csv_mode})
    services.jobs.submit(job.id)
    logger.info("upload accepted", extra={"tenant": knowledge_base.tenant_id, "knowledge_base": knowledge_base.id,
                                          "job": job.id, "items": len(items)})
    return JobAccepted(job_id=job.id, status=job.status, items=len(items))


@router.get("", response_model=DocumentList)
def list_documents(knowledge_base: ReadableKnowledgeBase, services: ServicesDep,
                   offset: int = Query(0, ge=0), limit: int = Query(100, ge=1, le=1000)) -> DocumentList:
    """List a knowledge base's documents, oldest first, one page at a time."""
    documents = services.catalog.list_documents(knowledge_base_id=knowledge_base.id, offset=offset, limit=limit)
    total, _ = services.catalog.count_documents(knowledge_base.id)
    data = [_public(document) for document in documents]
    return DocumentList(data=data, count=len(data), total=total, offset=offset, limit=limit)


@router.get("/{document_id:path}", response_model=DocumentPublic)
def get_document(document_id: str, knowledge_base: ReadableKnowledgeBase, services: ServicesDep) -> DocumentPublic:
    """Show one document's record."""
    document = services.catalog.get_document(knowledge_base_id=knowledge_base.id, document_id=document_id)
    if document is None:
        raise NotFound(f"document {document_id!r} not found in knowledge base {knowledge_base.name!r}")
    return _public(document)


@router.delete("/{document_id:path}", status_code=204)
def delete_document(document_id: str, knowledge_base: WritableKnowledgeBase, services: ServicesDep) -> Response:
    """Delete a document; it is removed from every index before this returns."""
    removed = services.catalog.delete_document(knowledge_base_id=knowledge_base.id, document_id=document_id)
    if removed is None:
        raise NotFound(f"document {document_id!r} not found in knowledge base {knowledge_base.name!r}")
    services.indices.get(knowledge_base.id).apply_changes()
    logger.info("document deleted", extra={"knowledge_base": knowledge_base.id, "chunks": len(removed)})
    return Response(status_code=204)


def _public(document) -> DocumentPublic:
    return DocumentPublic(document_id=document.document_id, title=document.title, source=document.source,
                          content_hash=document.content_hash, metadata=document.metadata,
                          chunk_count=document.chunk_count, created_at=document.created_at,
                          updated_at=document.updated_at)
