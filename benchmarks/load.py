"""Load test on a running service: concurrent queries during a bulk upload and alias swaps.

Query clients send /search and /query through the alias `live` while one client uploads documents into
another knowledge base and another swaps `live` between two knowledge bases every second. Every answer
must come wholly from one of the two, never from both, from the bulk one or from another tenant. The run
is bounded by --duration-s and by --max-requests, whichever comes first.

    python -m benchmarks.load --url http://127.0.0.1:8000 --admin-key "$DOMAINRAG_ADMIN_KEY"

It prints one table and exits with status 1 when any response was a 5xx or a wrong-knowledge-base answer.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

QUERY = "reactor coolant pressure"
COLOURS = ("blue", "green")
DOCUMENTS_PER_COLOUR = 20
UPLOAD_BATCH_DOCUMENTS = 100


@dataclass
class LoadReport:
    """Counts and latencies of one run; latencies are of the query clients' requests, in milliseconds."""

    statuses: Counter = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    wrong_answers: list[str] = field(default_factory=list)
    answers_by_colour: Counter = field(default_factory=Counter)
    transport_errors: int = 0
    swaps: int = 0
    uploaded_documents: int = 0
    ingested_documents: int = 0
    seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    @property
    def server_errors(self) -> int:
        return sum(count for status, count in self.statuses.items() if status >= 500)

    def percentile_ms(self, fraction: float) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

    def record(self, status: int, milliseconds: float | None = None) -> None:
        with self._lock:
            self.statuses[status] += 1
            if milliseconds is not None:
                self.latencies_ms.append(milliseconds)

    def record_answer(self, endpoint: str, document_ids: list[str]) -> None:
        colour = _answer_colour(document_ids)
        with self._lock:
            if colour is None:
                self.wrong_answers.append(f"{endpoint}: {document_ids}")
            else:
                self.answers_by_colour[colour] += 1

    def record_transport_error(self, endpoint: str, error: Exception) -> None:
        with self._lock:
            self.transport_errors += 1
            self.wrong_answers.append(f"{endpoint}: transport error {error!r}")


class _Budget:
    """Stops the run at a deadline or after a number of requests, whichever comes first."""

    def __init__(self, *, seconds: float, requests: int) -> None:
        self.deadline = time.monotonic() + seconds
        self.remaining = requests
        self.stop = threading.Event()
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self.stop.is_set() or time.monotonic() >= self.deadline or self.remaining <= 0:
                self.stop.set()
                return False
            self.remaining -= 1
            return True


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _ndjson(documents: list[dict]) -> bytes:
    return "\n".join(json.dumps(document) for document in documents).encode()


def _post_ndjson(http: httpx.Client, headers: dict, kb: str, documents: list[dict], budget: _Budget | None,
                 report: LoadReport | None) -> str | None:
    """Upload documents, waiting out 429s; return the job id, or None when the budget ran out."""
    while budget is None or not budget.stop.is_set():
        response = http.post(f"/v1/knowledge-bases/{kb}/documents", content=_ndjson(documents),
                             headers={**headers, "Content-Type": "application/x-ndjson"})
        if report is not None:
            report.record(response.status_code)
        if response.status_code == 429:
            time.sleep(float(response.headers.get("Retry-After", "1")))
            continue
        response.raise_for_status()
        return response.json()["job_id"]
    return None


def _wait_for_jobs(http: httpx.Client, headers: dict, job_ids: list[str], deadline: float) -> int:
    """Poll jobs until they finish or the deadline passes; return the documents they processed."""
    processed = 0
    for job_id in job_ids:
        while True:
            job = http.get(f"/v1/jobs/{job_id}", headers=headers)
            if job.status_code == 429:
                time.sleep(float(job.headers.get("Retry-After", "1")))
                continue
            job.raise_for_status()
            body = job.json()
            if body["status"] not in ("queued", "running") or time.monotonic() >= deadline:
                processed += body["processed"]
                break
            time.sleep(0.5)
    return processed


def _colour_documents(colour: str, tenant_label: str) -> list[dict]:
    return [{"id": f"{tenant_label}{colour}-{number}", "title": f"{colour} reactor log {number}",
             "text": f"The {colour} unit reports reactor coolant pressure reading {number} within limits."}
            for number in range(DOCUMENTS_PER_COLOUR)]


def _bulk_documents(count: int) -> list[dict]:
    return [{"id": f"bulk-{number}", "title": f"Bulk note {number}",
             "text": f"Inventory entry {number}: shelf {number % 97}, bin {number % 13}, checked by staff."}
            for number in range(count)]


def _setup(http: httpx.Client, admin_key: str, clients: int) -> dict:
    """Create the tenants, knowledge bases, alias and keys of one run."""
    run = secrets.token_hex(3)
    admin = _bearer(admin_key)
    tenant = http.post("/v1/tenants", json={"name": f"load-{run}"}, headers=admin)
    tenant.raise_for_status()
    owner = _bearer(tenant.json()["api_key"])
    for name in (*COLOURS, "bulk"):
        http.post("/v1/knowledge-bases", json={"name": name}, headers=owner).raise_for_status()
    jobs = [_post_ndjson(http, owner, colour, _colour_documents(colour, ""), None, None) for colour in COLOURS]

    # Another tenant with a knowledge base and an alias of the same names, whose answers must never appear.
    other = http.post("/v1/tenants", json={"name": f"load-other-{run}"}, headers=admin)
    other.raise_for_status()
    other_owner = _bearer(other.json()["api_key"])
    http.post("/v1/knowledge-bases", json={"name": "blue"}, headers=other_owner).raise_for_status()
    other_job = _post_ndjson(http, other_owner, "blue", _colour_documents("blue", "other-"), None, None)
    http.put("/v1/aliases/live", json={"knowledge_base": "blue"}, headers=other_owner).raise_for_status()

    deadline = time.monotonic() + 600
    _wait_for_jobs(http, owner, jobs, deadline)
    _wait_for_jobs(http, other_owner, [other_job], deadline)
    http.put("/v1/aliases/live", json={"knowledge_base": COLOURS[0]}, headers=owner).raise_for_status()

    readers = []
    for _ in range(clients):
        created = http.post("/v1/keys", json={"role": "read-only"}, headers=owner)
        created.raise_for_status()
        readers.append(_bearer(created.json()["api_key"]))
    return {"owner": owner, "readers": readers}


def _answer_colour(document_ids: list[str]) -> str | None:
    """Return the colour every document id belongs to, or None for a mix, a stranger or no documents."""
    colours = {document_id.split("-", 1)[0] for document_id in document_ids}
    if len(colours) == 1 and next(iter(colours)) in COLOURS:
        return next(iter(colours))
    return None


def _query_client(base_url: str, headers: dict, budget: _Budget, report: LoadReport, think_s: float,
                  timeout_s: float) -> None:
    with httpx.Client(base_url=base_url, timeout=timeout_s) as http:
        turn = 0
        while budget.take():
            endpoint = "search" if turn % 2 == 0 else "query"
            turn += 1
            started = time.perf_counter()
            try:
                response = http.post(f"/v1/knowledge-bases/live/{endpoint}", headers=headers,
                                     json={"query": QUERY, "top_k": 5})
            except httpx.TransportError as error:
                report.record_transport_error(endpoint, error)
                continue
            report.record(response.status_code, 1000 * (time.perf_counter() - started))
            if response.status_code == 200:
                body = response.json()
                items = body["hits"] if endpoint == "search" else body["citations"]
                report.record_answer(endpoint, [item["document_id"] for item in items])
            if think_s:
                time.sleep(think_s)


def _uploader(base_url: str, headers: dict, documents: int, budget: _Budget, report: LoadReport,
              timeout_s: float) -> None:
    with httpx.Client(base_url=base_url, timeout=timeout_s) as http:
        job_ids = []
        bulk = _bulk_documents(documents)
        for start in range(0, len(bulk), UPLOAD_BATCH_DOCUMENTS):
            batch = bulk[start:start + UPLOAD_BATCH_DOCUMENTS]
            job_id = _post_ndjson(http, headers, "bulk", batch, budget, report)
            if job_id is None:
                break
            job_ids.append(job_id)
            report.uploaded_documents += len(batch)
        report.ingested_documents = _wait_for_jobs(http, headers, job_ids, budget.deadline)
    # The run ends once the bulk upload is ingested, even with request budget left.
    budget.stop.set()


def _swapper(base_url: str, headers: dict, every_s: float, budget: _Budget, report: LoadReport,
             timeout_s: float) -> None:
    with httpx.Client(base_url=base_url, timeout=timeout_s) as http:
        while not budget.stop.wait(every_s):
            target = COLOURS[(report.swaps + 1) % 2]
            response = http.put("/v1/aliases/live", json={"knowledge_base": target}, headers=headers)
            report.record(response.status_code)
            if response.status_code == 200:
                report.swaps += 1


def run_load(base_url: str, admin_key: str, *, clients: int = 16, documents: int = 2000,
             swap_every_s: float = 1.0, duration_s: float = 600.0, max_requests: int = 200_000,
             think_s: float = 0.0, timeout_s: float = 120.0) -> LoadReport:
    """Run the load test against the service at base_url and return what it measured."""
    with httpx.Client(base_url=base_url, timeout=timeout_s) as http:
        keys = _setup(http, admin_key, clients)

    report = LoadReport()
    budget = _Budget(seconds=duration_s, requests=max_requests)
    threads = [threading.Thread(target=_query_client, name=f"query-{number}",
                                args=(base_url, keys["readers"][number], budget, report, think_s, timeout_s))
               for number in range(clients)]
    threads.append(threading.Thread(target=_uploader, name="uploader",
                                    args=(base_url, keys["owner"], documents, budget, report, timeout_s)))
    threads.append(threading.Thread(target=_swapper, name="swapper",
                                    args=(base_url, keys["owner"], swap_every_s, budget, report, timeout_s)))
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report.seconds = time.monotonic() - started
    return report


def format_report(report: LoadReport, clients: int) -> str:
    statuses = ", ".join(f"{status}: {count}" for status, count in sorted(report.statuses.items()))
    rows = [
        ("query clients", str(clients)),
        ("seconds", f"{report.seconds:.1f}"),
        ("requests", str(report.requests)),
        ("by status", statuses),
        ("5xx responses", str(report.server_errors)),
        ("transport errors", str(report.transport_errors)),
        ("wrong-knowledge-base answers", str(len(report.wrong_answers))),
        ("answers from blue / green", f"{report.answers_by_colour['blue']} / {report.answers_by_colour['green']}"),
        ("alias swaps", str(report.swaps)),
        ("documents uploaded / ingested", f"{report.uploaded_documents} / {report.ingested_documents}"),
        ("query latency p50 ms", f"{report.percentile_ms(0.50):.1f}"),
        ("query latency p95 ms", f"{report.percentile_ms(0.95):.1f}"),
        ("query latency p99 ms", f"{report.percentile_ms(0.99):.1f}"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="service base URL (default: %(default)s)")
    parser.add_argument("--admin-key", default=os.environ.get("DOMAINRAG_ADMIN_KEY"),
                        help="admin key that creates this run's tenants (env DOMAINRAG_ADMIN_KEY)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent query clients (default: %(default)s)")
    parser.add_argument("--documents", type=int, default=2000, help="documents to bulk-upload (default: %(default)s)")
    parser.add_argument("--swap-every-s", type=float, default=1.0, help="seconds between alias swaps")
    parser.add_argument("--duration-s", type=float, default=600.0, help="maximum run time, in seconds (default: %(default)s)")
    parser.add_argument("--max-requests", type=int, default=200_000, help="maximum query requests in the run (default: %(default)s)")
    parser.add_argument("--think-s", type=float, default=0.0, help="pause of each query client between requests")
    args = parser.parse_args(argv)
    if not args.admin_key:
        parser.error("an admin key is required: pass --admin-key or set DOMAINRAG_ADMIN_KEY")

    report = run_load(args.url, args.admin_key, clients=args.clients, documents=args.documents,
                      swap_every_s=args.swap_every_s, duration_s=args.duration_s, max_requests=args.max_requests,
                      think_s=args.think_s)
    print(format_report(report, args.clients))
    for wrong in report.wrong_answers[:10]:
        print(f"wrong answer: {wrong}", file=sys.stderr)
    return 1 if report.server_errors or report.wrong_answers else 0


if __name__ == "__main__":
    sys.exit(main())
