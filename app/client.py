"""Synchronous httpx client for the domainrag REST API (version 1)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

logger = logging.getLogger(__name__)

MAX_ERROR_BODY_CHARS = 1000
MAX_RATE_LIMIT_RETRIES = 5
MAX_RETRY_AFTER_SECONDS = 30.0


class ApiError(RuntimeError):
    """An HTTP response with an unexpected status code."""

    def __init__(self, method: str, url: str, status_code: int, body: str) -> None:
        self.method = method
        self.url = url
        self.status_code = status_code
        self.body = body
        shown_body = body if len(body) <= MAX_ERROR_BODY_CHARS else body[:MAX_ERROR_BODY_CHARS] + "..."
        super().__init__(f"{method} {url} failed with HTTP {status_code}: {shown_body}")


class MissingApiKeyError(ValueError):
    """A tenant request was made on a client that has no API key."""


class JobFailedError(RuntimeError):
    """An ingestion job that ended with status "failed"."""

    def __init__(self, job: Mapping[str, Any]) -> None:
        self.job = dict(job)
        errors = list(job.get("errors") or [])
        super().__init__(
            f"ingestion job {job.get('id')} failed after processing {job.get('processed')} of "
            f"{job.get('total')} documents; first errors: {errors[:5]}"
        )


class JobTimeoutError(TimeoutError):
    """An ingestion job that did not finish within the polling timeout."""

    def __init__(self, job: Mapping[str, Any], timeout_s: float) -> None:
        self.job = dict(job)
        super().__init__(
            f"ingestion job {job.get('id')} did not finish within {timeout_s:g} s; last status "
            f"{job.get('status')!r}, processed {job.get('processed')} of {job.get('total')}"
        )


def _batched(items: Iterable[Any], batch_size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


class DomainRagClient:
    """Client for one domainrag service.

    ``api_key`` authenticates tenant requests and ``admin_key`` authenticates
    ``create_tenant``. Knowledge base arguments go into the URL path as given, so pass
    the name that ``GET /v1/knowledge-bases/{name}`` accepts.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        admin_key: str | None = None,
        timeout_s: float = 120.0,
        http_client: httpx.Client | None = None,
    ) -> None:
        """``http_client``, when given, replaces the client built from ``base_url``: for example a
        ``fastapi.testclient.TestClient`` that calls an in-process app."""
        self.api_key = api_key
        self.admin_key = admin_key
        self._http = http_client or httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_s)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> DomainRagClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _request(
        self,
        method: str,
        path: str,
        *,
        key: str | None,
        expected: Sequence[int] = (200,),
        **kwargs: Any,
    ) -> httpx.Response:
        if key is None:
            raise MissingApiKeyError(f"{method} {path} needs an API key, but none is set on the client")
        headers = {"Authorization": f"Bearer {key}", **kwargs.pop("headers", {})}
        response = self._http.request(method, path, headers=headers, **kwargs)
        for _ in range(MAX_RATE_LIMIT_RETRIES):
            # The service limits requests per key: wait for its Retry-After, then send the request again.
            if response.status_code != 429 or "files" in kwargs:
                break
            time.sleep(min(float(response.headers.get("Retry-After", "1") or 1), MAX_RETRY_AFTER_SECONDS))
            response = self._http.request(method, path, headers=headers, **kwargs)
        if response.status_code not in expected:
            raise ApiError(method, str(response.request.url), response.status_code, response.text)
        return response

    def _tenant_request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self._request(method, path, key=self.api_key, **kwargs)

    # Tenants and knowledge bases

    def create_tenant(self, name: str) -> dict[str, Any]:
        """Create a tenant with the admin key and return ``{"id", "name", "api_key"}``."""
        response = self._request(
            "POST", "/v1/tenants", key=self.admin_key, expected=(201,), json={"name": name}
        )
        return response.json()

    def migrate(self, kb: str, to: str = "milvus") -> dict[str, Any]:
        """Move a knowledge base's BM25 and dense indices to another backend; returns the migration's summary."""
        return self._tenant_request("POST", f"/v1/knowledge-bases/{quote(kb, safe='')}/migrate",
                                    json={"to": to}).json()

    def get_knowledge_base(self, name: str) -> dict[str, Any]:
        return self._tenant_request("GET", f"/v1/knowledge-bases/{quote(name, safe='')}").json()

    def create_or_get_knowledge_base(self, name: str, backend: str | None = None) -> dict[str, Any]:
        """Create the knowledge base, or fetch it when the name already exists (HTTP 409).

        ``backend`` ("local" or "milvus") applies only to a knowledge base that this call creates; None
        leaves the choice to the service's DOMAINRAG_DEFAULT_BACKEND. Compare the returned ``backend``
        to see whether an existing knowledge base is on another one.
        """
        body = {"name": name} if backend is None else {"name": name, "backend": backend}
        response = self._tenant_request("POST", "/v1/knowledge-bases", expected=(201, 409), json=body)
        if response.status_code == 201:
            return response.json()
        return self.get_knowledge_base(name)

    # Ingestion

    def upload_batch(self, kb: str, documents: Sequence[Mapping[str, Any]]) -> str:
        """Upload documents as one NDJSON body and return the job id."""
        body = "".join(json.dumps(document, ensure_ascii=False) + "\n" for document in documents)
        response = self._tenant_request(
            "POST",
            f"/v1/knowledge-bases/{quote(kb, safe='')}/documents",
            expected=(202,),
            content=body.encode("utf-8"),
            headers={"Content-Type": "application/x-ndjson"},
        )
        return str(response.json()["job_id"])

    def upload_files(self, kb: str, paths: Sequence[Path], labels: Sequence[str] | None = None) -> str:
        """Upload files as one multipart request (field ``files``) and return the job id.

        ``labels`` are the file names the service sees (and uses as document ids); by default each
        file's base name.
        """
        labels = list(labels) if labels is not None else [path.name for path in paths]
        handles = [path.open("rb") for path in paths]
        try:
            files = [("files", (label, handle)) for label, handle in zip(labels, handles)]
            response = self._tenant_request(
                "POST", f"/v1/knowledge-bases/{quote(kb, safe='')}/documents", expected=(202,), files=files
            )
        finally:
            for handle in handles:
                handle.close()
        return str(response.json()["job_id"])

    def get_job(self, job_id: str) -> dict[str, Any]:
        return self._tenant_request("GET", f"/v1/jobs/{quote(job_id, safe='')}").json()

    def wait_for_job(
        self, job_id: str, poll_interval_s: float = 0.5, timeout_s: float = 3600.0
    ) -> dict[str, Any]:
        """Poll the job until it finishes (with or without per-document errors) and return it.

        Raises JobFailedError when the job fails and JobTimeoutError when it is still
        queued or running after ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            job = self.get_job(job_id)
            status = job.get("status")
            if status in ("succeeded", "completed_with_errors"):
                return job
            if status == "failed":
                raise JobFailedError(job)
            if time.monotonic() >= deadline:
                raise JobTimeoutError(job, timeout_s)
            time.sleep(poll_interval_s)

    def upload_documents(
        self,
        kb: str,
        documents: Iterable[Mapping[str, Any]],
        batch_size: int = 1000,
        poll_interval_s: float = 0.5,
        job_timeout_s: float = 3600.0,
    ) -> list[dict[str, Any]]:
        """Upload documents in batches of ``batch_size`` lines and wait for each job.

        Each batch is sent only after the job of the previous one has succeeded. Returns
        the finished jobs. A succeeded job may still report per-document failures in
        ``failed`` and ``errors``, which are logged as warnings.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        jobs: list[dict[str, Any]] = []
        uploaded = 0
        for batch in _batched(documents, batch_size):
            job_id = self.upload_batch(kb, batch)
            job = self.wait_for_job(job_id, poll_interval_s, job_timeout_s)
            uploaded += len(batch)
            failed = int(job.get("failed") or 0)
            if failed:
                errors = list(job.get("errors") or [])
                logger.warning(
                    "job %s: %d of %s documents failed; first errors: %s",
                    job_id, failed, job.get("total"), errors[:5],
                )
            logger.info("job %s succeeded, %d documents uploaded to %r so far", job_id, uploaded, kb)
            jobs.append(job)
        return jobs

    # Retrieval and generation

    def search(
        self, kb: str, query: str, top_k: int, retrievers: Sequence[str] | None = None, **options: Any
    ) -> dict[str, Any]:
        """Return the search response: ``{"hits": [...]}`` with chunk hits, best first.

        ``options`` are further request fields such as ``rerank``; those set to None are left out.
        """
        payload: dict[str, Any] = {"query": query, "top_k": top_k}
        if retrievers is not None:
            payload["retrievers"] = list(retrievers)
        payload.update({name: value for name, value in options.items() if value is not None})
        return self._tenant_request(
            "POST", f"/v1/knowledge-bases/{quote(kb, safe='')}/search", json=payload
        ).json()

    def query(self, kb: str, query: str, top_k: int, **options: Any) -> dict[str, Any]:
        """Return the generated answer with ``answer``, ``citations`` and ``timings_ms``.

        ``options`` are further request fields such as ``rerank``, ``generator`` or ``max_new_tokens``;
        those set to None are left out so that the service's defaults apply.
        """
        payload = {"query": query, "top_k": top_k}
        payload.update({name: value for name, value in options.items() if value is not None})
        return self._tenant_request(
            "POST", f"/v1/knowledge-bases/{quote(kb, safe='')}/query", json=payload
        ).json()
