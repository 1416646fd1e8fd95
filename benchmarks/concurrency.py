"""Measure search throughput over HTTP with one client and with several concurrent clients.

Starts the service as a separate process on a loopback port with a temporary data directory, uploads the
first --documents SciFact abstracts, then sends fused searches (bm25 and dense) from 1 client and from
--clients clients, each phase for --seconds seconds or --max-requests requests, whichever comes first.
The clients run in this process, so on a small machine they take some CPU from the service.

    python -m benchmarks.concurrency --clients 8 --seconds 20
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from app.client import DomainRagClient
from benchmarks.common import REPO_ROOT, SHARED_DATA_DIR, format_table, read_jsonl
from evaluation.datasets import corpus_documents

KNOWLEDGE_BASE = "concurrency"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        return listener.getsockname()[1]


def start_service(data_dir: Path, admin_key: str, port: int, torch_threads: int | None,
                  settings: dict[str, str] | None = None) -> subprocess.Popen:
    environment = {**os.environ, "DOMAINRAG_DATA_DIR": str(data_dir), "DOMAINRAG_ADMIN_KEY": admin_key,
                   "DOMAINRAG_HOST": "127.0.0.1", "DOMAINRAG_PORT": str(port), "DOMAINRAG_GENERATOR": "extractive",
                   "DOMAINRAG_RATE_LIMIT_PER_SECOND": "0", "HF_HUB_OFFLINE": "1"}
    if torch_threads:
        environment["DOMAINRAG_TORCH_THREADS"] = str(torch_threads)
    environment.update({f"DOMAINRAG_{name.upper()}": value for name, value in (settings or {}).items()})
    process = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--log-level", "WARNING"],
                               env=environment, cwd=REPO_ROOT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited with status {process.returncode} before it was ready")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    process.terminate()
    raise RuntimeError("the service was not ready after 300 s")


def process_cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far, from /proc (Linux); NaN where /proc is missing."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    # utime and stime are fields 14 and 15 of stat(5), counted from the state field (3) here.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_phase(url: str, api_key: str, queries: list[str], clients: int, seconds: float,
              max_requests: int, service_pid: int) -> dict:
    """Send searches from `clients` threads until the time or request budget runs out.

    Besides throughput it reports the CPU time per request of the service and of the clients. On a machine
    shared with other work, requests/s falls with the load, while CPU per request depends much less on it
    and so bounds what the service would do on idle cores.
    """
    latencies_ms: list[float] = []
    errors = 0
    lock = threading.Lock()
    sent = 0
    deadline = time.monotonic() + seconds

    def client_loop(offset: int) -> None:
        nonlocal sent, errors
        with httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {api_key}"}) as http:
            index = offset
            while time.monotonic() < deadline:
                with lock:
                    if sent >= max_requests:
                        return
                    sent += 1
                started = time.perf_counter()
                response = http.post(f"/v1/knowledge-bases/{KNOWLEDGE_BASE}/search",
                                     json={"query": queries[index % len(queries)], "top_k": 10,
                                           "retrievers": ["bm25", "dense"]})
                elapsed = 1000 * (time.perf_counter() - started)
                with lock:
                    if response.status_code == 200:
                        latencies_ms.append(elapsed)
                    else:
                        errors += 1
                index += clients

    started = time.perf_counter()
    service_cpu, client_cpu = process_cpu_seconds(service_pid), time.process_time()
    threads = [threading.Thread(target=client_loop, args=(offset,)) for offset in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall_s = time.perf_counter() - started
    service_cpu = process_cpu_seconds(service_pid) - service_cpu
    client_cpu = time.process_time() - client_cpu
    requests = max(len(latencies_ms), 1)
    return {"clients": clients, "requests": len(latencies_ms), "errors": errors, "seconds": round(wall_s, 2),
            "requests_per_second": len(latencies_ms) / wall_s, "p50_ms": statistics.median(latencies_ms),
            "p95_ms": statistics.quantiles(latencies_ms, n=20)[-1],
            "service_cpu_ms": 1000 * service_cpu / requests, "client_cpu_ms": 1000 * client_cpu / requests}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED_DATA_DIR / "scifact", help="SciFact directory")
    parser.add_argument("--documents", type=int, default=300, help="abstracts uploaded (default: %(default)s)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients of phase 2 (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=20, help="length of each phase (default: %(default)s)")
    parser.add_argument("--max-requests", type=int, default=5000, help="request cap per phase (default: %(default)s)")
    parser.add_argument("--torch-threads", type=int, help="DOMAINRAG_TORCH_THREADS for the service")
    parser.add_argument("--setting", action="append", default=[], metavar="NAME=VALUE",
                        help="another service setting, for example query_batch_size=1 (DOMAINRAG_ prefix optional)")
    parser.add_argument("--port", type=int, default=0, help="loopback port of the service (default: a free one)")
    parser.add_argument("--tmp-dir", type=Path, help="parent of the temporary data directory (default: the system's)")
    args = parser.parse_args(argv)
    settings = {}
    for item in args.setting:
        name, separator, value = item.partition("=")
        if not separator:
            parser.error(f"--setting expects NAME=VALUE, got {item!r}")
        settings[name.upper().removeprefix("DOMAINRAG_")] = value

    queries = [record["text"] for record in read_jsonl(args.data / "queries.jsonl")]
    documents = [document for _, document in zip(range(args.documents), corpus_documents(args.data / "corpus.jsonl"))]
    admin_key = secrets.token_urlsafe(24)
    port = args.port or free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="conc-", dir=args.tmp_dir) as data_dir:
        service = start_service(Path(data_dir), admin_key, port, args.torch_threads, settings)
        try:
            with DomainRagClient(url, admin_key=admin_key, timeout_s=600) as client:
                client.api_key = client.create_tenant("concurrency")["api_key"]
                client.create_or_get_knowledge_base(KNOWLEDGE_BASE)
                client.upload_documents(KNOWLEDGE_BASE, documents)
                api_key = client.api_key
            run_phase(url, api_key, queries, 1, 2, 20, service.pid)  # warm-up
            load_before = os.getloadavg()
            phases = [run_phase(url, api_key, queries, clients, args.seconds, args.max_requests, service.pid)
                      for clients in (1, args.clients)]
        finally:
            service.terminate()
            service.wait(timeout=60)

    columns = ["clients", "requests", "errors", "seconds", "requests_per_second", "p50_ms", "p95_ms",
               "service_cpu_ms", "client_cpu_ms"]
    print(format_table(["clients", "requests", "errors", "seconds", "requests/s", "p50 ms", "p95 ms",
                        "service CPU ms/request", "client CPU ms/request"],
                       [[phase[column] for column in columns] for phase in phases]))
    ratio = phases[1]["requests_per_second"] / phases[0]["requests_per_second"]
    print(f"{args.clients} clients get {ratio:.2f}x the search throughput of 1 client")
    # Other work on the machine takes cores from both phases, and the load averages show how much there was.
    load_after = os.getloadavg()
    print("load average (1, 5, 15 min) before: " + ", ".join(f"{value:.2f}" for value in load_before)
          + "; after: " + ", ".join(f"{value:.2f}" for value in load_after))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
