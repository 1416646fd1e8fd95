"""Background ingestion: a worker thread claims queued jobs from the catalog; unfinished jobs resume after a restart.

Jobs are handed out by the catalog, not by an in-process queue: the worker claims the oldest claimable job
(`Catalog.claim_job`), so with several replicas sharing one catalog each job runs on exactly one of them, and a
job queued through one replica is picked up by whichever worker is idle. An upload wakes this replica's worker
at once; otherwise it looks every DOMAINRAG_JOB_POLL_INTERVAL_S. While it runs a job it sends a heartbeat; a
job whose replica stops sending them for DOMAINRAG_JOB_LEASE_S is taken over by another.

A job lists uploaded items stored content-addressed under the knowledge base's raw/ folder. Each document is
written to the catalog in its own transaction and then applied to the indices, so a crash leaves every
document either fully indexed or untouched, and re-running a job skips what it already stored (same hash).
"""

import hashlib
import logging
import os
import threading
import time
from pathlib import Path

from app.services import Services
from ingestion.isolation import IsolatedParser
from ingestion.loaders.base import ItemError, ParsedDocument, ParseOptions
from ingestion.pipeline import PreparedDocument, prepare
from retrievers.milvus import IndexWriteError
from storage.catalog import Job, NewChunk, utc_now

logger = logging.getLogger(__name__)

# Embed this many documents' chunks together; larger batches use the embedder better, smaller ones report
# progress sooner.
DOCUMENTS_PER_BATCH = 32
PROGRESS_EVERY_SECONDS = 1.0


def raw_directory(data_dir: Path, knowledge_base_id: str) -> Path:
    return data_dir / "kb" / knowledge_base_id / "raw"


def store_raw(data_dir: Path, knowledge_base_id: str, data: bytes) -> str:
    """Store an upload under its SHA-256 and return the digest; identical uploads share one file."""
    digest = hashlib.sha256(data).hexdigest()
    directory = raw_directory(data_dir, knowledge_base_id)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / digest
    if not path.exists():
        temporary = directory / f"{digest}.{threading.get_ident()}.tmp"
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    return digest


class _LeaseLost(Exception):
    """Another replica took the job over (this one missed its heartbeats); stop without writing to it."""


class JobRunner:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.worker = services.settings.worker_name
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._heartbeat_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._current: str | None = None  # the job this worker runs now
        self._lease_lost = threading.Event()
        self._idle = threading.Event()
        self._catalog_failing = False
        self._parser = IsolatedParser(services.settings.parse_timeout_s)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ingestion", daemon=True)
        self._thread.start()
        self._heartbeat_thread = threading.Thread(target=self._heartbeat, name="ingestion-heartbeat", daemon=True)
        self._heartbeat_thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the document in flight and hand the rest of the job back, for any replica's next claim."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._heartbeat_thread is not None:
            self._heartbeat_thread.join(timeout)
        self._parser.close()

    def submit(self, job_id: str) -> None:
        """Wake the worker for a job just queued in the catalog (any idle replica may take it)."""
        self._wake.set()

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Block until this worker has nothing to claim and runs no job; for tests and the CLI."""
        self._idle.clear()
        self._wake.set()
        return self._idle.wait(timeout)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            job = self._claim()
            if job is None:
                self._idle.set()
                self._wake.wait(self.services.settings.job_poll_interval_s)
                continue
            self._current = job.id
            self._lease_lost.clear()
            try:
                self._run_job(job)
            except _LeaseLost:
                logger.warning("job taken over by another replica; stopped working on it",
                               extra={"job": job.id, "replica": self.worker})
            except Exception:
                if self._knowledge_base_deleted(job):
                    # Deleting a knowledge base deletes its jobs too, so the job's writes fail. No client can read
                    # the job's status any more, and nothing crashed.
                    logger.info("knowledge base deleted while its ingestion job ran; job stopped",
                                extra={"job": job.id, "knowledge_base": job.knowledge_base_id})
                else:
                    logger.exception("ingestion job crashed", extra={"job": job.id})
                    self._fail(job.id, "internal error while ingesting; see the service log")
            finally:
                self._current = None
                if self._stopping.is_set():
                    self._release(job.id)

    def _knowledge_base_deleted(self, job: Job) -> bool:
        try:
            return self.services.catalog.get_knowledge_base(job.knowledge_base_id) is None
        except Exception:
            return False

    def _claim(self) -> Job | None:
        """Claim the next job from the catalog, or return None when there is none or the catalog failed."""
        try:
            job = self.services.catalog.claim_job(worker=self.worker,
                                                  lease_seconds=self.services.settings.job_lease_s)
        except Exception:
            # Logged once per outage, not at every poll. The worker tries again at the poll interval.
            if not self._catalog_failing:
                logger.exception("claiming a job from the catalog failed; retrying until it succeeds",
                                 extra={"replica": self.worker})
            self._catalog_failing = True
            return None
        if self._catalog_failing:
            logger.info("claiming jobs from the catalog works again", extra={"replica": self.worker})
            self._catalog_failing = False
        return job

    def _release(self, job_id: str) -> None:
        try:
            self.services.catalog.release_job(job_id, self.worker)
        except Exception:
            logger.exception("could not hand the job back; it resumes once its lease expires", extra={"job": job_id})

    def _heartbeat(self) -> None:
        interval = max(0.05, self.services.settings.job_lease_s / 4)
        while not self._stopping.wait(interval):
            job_id = self._current
            if job_id is None:
                continue
            try:
                if not self.services.catalog.heartbeat_job(job_id, self.worker) and self._current == job_id:
                    self._lease_lost.set()
            except Exception:
                logger.exception("could not record the job heartbeat", extra={"job": job_id})

    def _save(self, job: Job) -> None:
        if self._lease_lost.is_set() or not self.services.catalog.update_job(job):
            raise _LeaseLost(job.id)

    def _fail(self, job_id: str, message: str) -> None:
        job = self.services.catalog.get_job(job_id)
        if job is not None and job.worker == self.worker:
            job.status = "failed"
            job.errors.append({"source": "job", "message": message})
            self.services.catalog.update_job(job)

    def _run_job(self, job: Job) -> None:
        catalog = self.services.catalog
        knowledge_base = next((kb for kb in catalog.all_knowledge_bases() if kb.id == job.knowledge_base_id), None)
        if knowledge_base is None:
            return
        # The claim marked the job running; one that had started before was interrupted (a restart, a handover).
        resumed = job.started_at is not None
        # A resumed job starts its counts again: documents it stored before the restart count as unchanged.
        job.status, job.total, job.processed, job.failed, job.unchanged, job.errors = "running", 0, 0, 0, 0, []
        job.started_at, job.documents_per_second = utc_now(), 0.0
        self._save(job)
        logger.info("job resumed" if resumed else "job started",
                    extra={"job": job.id, "knowledge_base": knowledge_base.id, "items": len(job.items),
                           "replica": self.worker})
        options = ParseOptions(csv_mode=job.options.get("csv_mode", "row"),
                               max_pdf_pages=self.services.settings.max_pdf_pages)
        started = time.perf_counter()
        last_progress = started

        batch: list[PreparedDocument] = []
        for item in job.items:
            path = raw_directory(self.services.settings.data_dir, knowledge_base.id) / item["raw"]
            try:
                data = path.read_bytes()
            except OSError as error:
                job.total += 1
                job.failed += 1
                job.errors.append({"source": item["source"], "message": f"stored upload unreadable: {error}"})
                continue
            for parsed in self._parser.parse(data, source=item["source"], kind=item["kind"], options=options):
                if self._stopping.is_set() or self._lease_lost.is_set():
                    self._write_batch(job, batch)
                    self._save(job)
                    return
                job.total += 1
                if isinstance(parsed, ItemError):
                    job.failed += 1
                    job.errors.append({"source": parsed.source, "message": parsed.message})
                    continue
                prepared = self._prepare(job, knowledge_base, parsed, item["source"])
                if prepared is None:
                    continue
                batch.append(prepared)
                if len(batch) >= DOCUMENTS_PER_BATCH:
                    self._write_batch(job, batch)
                    batch = []
                if time.perf_counter() - last_progress >= PROGRESS_EVERY_SECONDS:
                    job.documents_per_second = _rate(job.processed, time.perf_counter() - started)
                    self._save(job)
                    last_progress = time.perf_counter()
        self._write_batch(job, batch)

        self.services.indices.get(knowledge_base.id).save()
        elapsed = time.perf_counter() - started
        job.documents_per_second = _rate(job.processed, elapsed)
        if job.failed == 0:
            job.status = "succeeded"
        elif job.processed == 0:
            job.status = "failed"
        else:
            job.status = "completed_with_errors"
        self._save(job)
        logger.info("job finished", extra={"job": job.id, "knowledge_base": knowledge_base.id, "replica": self.worker,
                                           "status": job.status,
                                           "documents": job.processed, "failed": job.failed,
                                           "unchanged": job.unchanged, "seconds": round(elapsed, 2),
                                           "documents_per_second": job.documents_per_second})

    def _prepare(self, job: Job, knowledge_base, parsed: ParsedDocument, source: str) -> PreparedDocument | None:
        try:
            prepared = prepare(parsed, source=source, chunk_size=knowledge_base.chunk_size,
                               chunk_overlap=knowledge_base.chunk_overlap,
                               token_offsets=self.services.embedder.token_offsets)
        except ValueError as error:
            job.failed += 1
            job.errors.append({"source": _error_source(source, parsed.document_id), "message": str(error)})
            return None
        if not prepared.chunks:
            job.failed += 1
            job.errors.append({"source": _error_source(source, prepared.document_id),
                               "message": "document has no text after normalisation"})
            return None
        existing = self.services.catalog.get_document(knowledge_base_id=knowledge_base.id,
                                                      document_id=prepared.document_id)
        if existing is not None and existing.content_hash == prepared.content_hash:
            job.processed += 1
            job.unchanged += 1
            return None
        return prepared

    def _write_batch(self, job: Job, batch: list[PreparedDocument]) -> None:
        if not batch:
            return
        texts = [f"{document.title}\n{chunk.text}" if document.title else chunk.text
                 for document in batch for chunk in document.chunks]
        embeddings = self.services.embedder.embed(texts)
        offset = 0
        for document in batch:
            chunks = []
            for position, (chunk, metadata) in enumerate(zip(document.chunks, document.chunk_metadata)):
                chunks.append(NewChunk(position=position, text=chunk.text, embedding=embeddings[offset],
                                       metadata=metadata))
                offset += 1
            self.services.catalog.replace_document(
                knowledge_base_id=job.knowledge_base_id, document_id=document.document_id, title=document.title,
                source=document.source, content_hash=document.content_hash, metadata=document.metadata,
                chunks=chunks)
            job.processed += 1
        try:
            self.services.indices.get(job.knowledge_base_id).apply_changes()
        except IndexWriteError as error:
            self._unstore_batch(job, batch, error)

    def _unstore_batch(self, job: Job, batch: list[PreparedDocument], error: IndexWriteError) -> None:
        """The index backend (Milvus) refused a write after its retries: take the batch's documents back out of
        the catalog and count them failed, so that none stays half-indexed. A document that replaced an
        earlier version loses that version too; uploading it again stores it."""
        logger.error("index backend write failed; the batch's documents are marked failed",
                     extra={"job": job.id, "knowledge_base": job.knowledge_base_id, "documents": len(batch),
                            "error": str(error)})
        for document in batch:
            self.services.catalog.delete_document(knowledge_base_id=job.knowledge_base_id,
                                                  document_id=document.document_id)
            job.processed -= 1
            job.failed += 1
            job.errors.append({"source": _error_source(document.source, document.document_id),
                               "message": f"not stored: the index backend failed to index it ({error})"})
        try:
            self.services.indices.get(job.knowledge_base_id).apply_changes()
        except IndexWriteError:
            # The deletes stay in the chunk log and reach the backend with the next write that gets through.
            pass


def _rate(documents: int, seconds: float) -> float:
    return round(documents / seconds, 2) if seconds > 0 else 0.0


def _error_source(source: str, document_id: str | None) -> str:
    """Name the file, and the document too when the file contains several (NDJSON lines, CSV rows)."""
    return source if document_id in (None, source) else f"{source} ({document_id})"
