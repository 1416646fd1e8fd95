"""Measure search throughput over HTTP with one client and with several concurrent clients.

Starts the service as a separate process on a loopback port with a temporary data directory, uploads the
first --documents SciFact abstracts, then sends fused searches (bm25 and dense) from 1 client and from
--clients clients, each phase for --seconds seconds or --max-requests requests, whichever comes first.
The clients run in this process, so on a small machine they take some CPU from the service.

With --synthetic-chunks N the knowledge base contains N synthetic chunks instead, built in-process without
embedding them (benchmarks/synthetic_kb.py), and the service starts on that data directory with
DOMAINRAG_GRAPH_INDEX=false. --keep-data DIR builds it in DIR, or reuses the one already there, and keeps it.
The script then also prints how long the service took to start and to open the knowledge base, and the
service's resident memory.

    python -m benchmarks.concurrency --clients 8 --seconds 20
    python -m benchmarks.concurrency --synthetic-chunks 1000000 --keep-data /tmp/synthetic-1m --seconds 30
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
from contextlib import nullcontext
from pathlib import Path

import httpx

from app.client import DomainRagClient
from benchmarks.common import REPO_ROOT, SHARED_DATA_DIR, configure_logging, format_table, read_jsonl
from evaluation.datasets import corpus_documents

KNOWLEDGE_BASE = "concurrency"
# Opening a knowledge base of a million chunks reads about 2 GB of snapshots, so its first search is slow.
FIRST_SEARCH_TIMEOUT_S = 1800
# On shutdown the service saves every open index, which at a million chunks rewrites those 2 GB.
SHUTDOWN_TIMEOUT_S = 600


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        return listener.getsockname()[1]


def start_service(data_dir: Path, admin_key: str, port: int, torch_threads: int | None,
                  settings: dict[str, str] | None = None) -> subprocess.Popen:
    """Start `app.cli serve` and return once /readyz returns 200; RuntimeError when it exits or takes 300 s."""
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


def stop_service(service: subprocess.Popen) -> None:
    """Stop the service as an operator would (SIGTERM), and kill it if it has not exited in SHUTDOWN_TIMEOUT_S."""
    service.terminate()
    try:
        service.wait(timeout=SHUTDOWN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        service.kill()
        service.wait()
        raise RuntimeError(f"the service did not stop within {SHUTDOWN_TIMEOUT_S} s of SIGTERM and was killed")


def process_cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far, from /proc (Linux); NaN where /proc is missing."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    # utime and stime are fields 14 and 15 of stat(5), counted from the state field (3) here.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_schedule_seconds(pid: int) -> tuple[float, float]:
    """Return the seconds a process's live threads have run on a core and waited in the run queue, summed.

    Read from /proc/PID/task/*/schedstat (Linux); NaN where it is missing. A thread waiting for a lock or
    the GIL sleeps and counts in neither, so run-queue time measures only cores taken by other work.
    """
    on_cpu = waiting = 0.0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return float("nan"), float("nan")
    for task in tasks:
        try:
            fields = (task / "schedstat").read_text().split()
        except OSError:
            continue  # the thread exited meanwhile
        # The first two fields are nanoseconds on a core and waiting in the run queue.
        on_cpu += int(fields[0]) / 1e9
        waiting += int(fields[1]) / 1e9
    return on_cpu, waiting


def resident_mib(pid: int) -> tuple[float, float]:
    """Return a process's resident memory now and at its peak, in MiB, from /proc (Linux); NaN where missing."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return float("nan"), float("nan")
    fields = {name: value for name, _, value in (line.partition(":") for line in lines)}
    # The kernel reports both in kB.
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def search_path(knowledge_base: str) -> str:
    return f"/v1/knowledge-bases/{knowledge_base}/search"


def search_body(query: str) -> dict:
    return {"query": query, "top_k": 10, "retrievers": ["bm25", "dense"]}


def run_phase(url: str, api_key: str, knowledge_base: str, queries: list[str], clients: int, seconds: float,
              max_requests: int, service_pid: int) -> dict:
    """Send searches from `clients` threads until the time or request budget runs out.

    Besides throughput it reports the CPU time per request of the service and of the clients. On a machine
    shared with other work, requests/s falls with the load, while CPU per request depends much less on it
    and so bounds what the service would do on idle cores. It also reports how many cores the service used
    and how many its threads waited for (run queue), and the mean of each stage of the responses' timings_ms.
    """
    latencies_ms: list[float] = []
    stage_ms: dict[str, list[float]] = {}
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
                response = http.post(search_path(knowledge_base), json=search_body(queries[index % len(queries)]))
                elapsed = 1000 * (time.perf_counter() - started)
                timings = response.json().get("timings_ms", {}) if response.status_code == 200 else {}
                with lock:
                    if response.status_code == 200:
                        latencies_ms.append(elapsed)
                        for stage, value in timings.items():
                            stage_ms.setdefault(stage, []).append(value)
                    else:
                        errors += 1
                index += clients

    started = time.perf_counter()
    service_cpu, client_cpu = process_cpu_seconds(service_pid), time.process_time()
    schedule = thread_schedule_seconds(service_pid)
    threads = [threading.Thread(target=client_loop, args=(offset,)) for offset in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall_s = time.perf_counter() - started
    service_cpu = process_cpu_seconds(service_pid) - service_cpu
    client_cpu = time.process_time() - client_cpu
    on_cpu, waiting = (after - before for after, before in zip(thread_schedule_seconds(service_pid), schedule))
    requests = max(len(latencies_ms), 1)
    return {"clients": clients, "requests": len(latencies_ms), "errors": errors, "seconds": round(wall_s, 2),
            "requests_per_second": len(latencies_ms) / wall_s, "p50_ms": statistics.median(latencies_ms),
            "p95_ms": statistics.quantiles(latencies_ms, n=20)[-1],
            "service_cpu_ms": 1000 * service_cpu / requests, "client_cpu_ms": 1000 * client_cpu / requests,
            "service_cores": on_cpu / wall_s, "run_queue_cores": waiting / wall_s,
            "stage_ms": {stage: statistics.mean(values) for stage, values in stage_ms.items()}}


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED_DATA_DIR / "scifact", help="SciFact directory")
    parser.add_argument("--documents", type=int, default=300, help="abstracts uploaded (default: %(default)s)")
    parser.add_argument("--synthetic-chunks", type=int, metavar="N",
                        help="search a knowledge base of N synthetic chunks, stored without embedding them, "
                        "instead of uploading --documents abstracts")
    parser.add_argument("--keep-data", type=Path, metavar="DIR",
                        help="with --synthetic-chunks: build the data directory in DIR, or reuse the one there, "
                        "and keep it (default: a temporary directory, deleted afterwards)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients of phase 2 (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=20, help="length of each phase (default: %(default)s)")
    parser.add_argument("--max-requests", type=int, default=5000, help="request cap per phase (default: %(default)s)")
    parser.add_argument("--torch-threads", type=int, help="DOMAINRAG_TORCH_THREADS for the service")
    parser.add_argument("--setting", action="append", default=[], metavar="NAME=VALUE",
                        help="another service setting, for example query_batch_size=1 (DOMAINRAG_ prefix optional)")
    parser.add_argument("--port", type=int, default=0, help="loopback port of the service (default: a free one)")
    parser.add_argument("--tmp-dir", type=Path, help="parent of the temporary data directory (default: the system's)")
    args = parser.parse_args(argv)
    if args.keep_data is not None and args.synthetic_chunks is None:
        parser.error("--keep-data needs --synthetic-chunks")
    if args.synthetic_chunks is not None and args.synthetic_chunks < 1:
        parser.error(f"--synthetic-chunks must be at least 1, got {args.synthetic_chunks}")
    args.settings = {}
    for item in args.setting:
        name, separator, value = item.partition("=")
        if not separator:
            parser.error(f"--setting expects NAME=VALUE, got {item!r}")
        args.settings[name.upper().removeprefix("DOMAINRAG_")] = value
    return args


def prepare_synthetic(args: argparse.Namespace, data_dir: Path) -> tuple[str, str]:
    """Build or reuse the synthetic knowledge base in `data_dir`; return its name and a new read-only API key."""
    from app.settings import Settings
    from benchmarks.synthetic_kb import create_api_key, prepare_knowledge_base
    from retrievers.embedders import load_embedder

    settings = Settings(data_dir=data_dir)
    # The same embedder as the service's, so that the snapshot's embedder name and dimension match it.
    embedder = load_embedder(settings.embedder, batch_size=settings.embed_batch_size)
    description = prepare_knowledge_base(data_dir, chunks=args.synthetic_chunks,
                                         corpus_path=args.data / "corpus.jsonl", embedder=embedder)
    return description.knowledge_base, create_api_key(data_dir, description)


def open_knowledge_base(url: str, api_key: str, knowledge_base: str, query: str) -> float:
    """Send the first search, which makes the service open the knowledge base's indices; return its seconds."""
    started = time.perf_counter()
    response = httpx.post(url + search_path(knowledge_base), json=search_body(query),
                          headers={"Authorization": f"Bearer {api_key}"}, timeout=FIRST_SEARCH_TIMEOUT_S)
    if response.status_code != 200:
        raise RuntimeError(f"the first search failed with status {response.status_code}: {response.text[:500]}")
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    configure_logging()
    queries = [record["text"] for record in read_jsonl(args.data / "queries.jsonl")]
    admin_key = secrets.token_urlsafe(24)
    port = args.port or free_port()
    url = f"http://127.0.0.1:{port}"
    settings = dict(args.settings)
    if args.synthetic_chunks is not None:
        # The synthetic knowledge base has no entity graph, and with the graph on the service would build one.
        settings["GRAPH_INDEX"] = "false"
    if args.keep_data is not None:
        args.keep_data.mkdir(parents=True, exist_ok=True)
        data_dir_context = nullcontext(str(args.keep_data))
    else:
        data_dir_context = tempfile.TemporaryDirectory(prefix="conc-", dir=args.tmp_dir)

    with data_dir_context as data_dir_name:
        data_dir = Path(data_dir_name)
        knowledge_base, api_key = KNOWLEDGE_BASE, ""
        if args.synthetic_chunks is not None:
            knowledge_base, api_key = prepare_synthetic(args, data_dir)
        started = time.perf_counter()
        service = start_service(data_dir, admin_key, port, args.torch_threads, settings)
        ready_s = time.perf_counter() - started
        try:
            if args.synthetic_chunks is None:
                api_key = upload_abstracts(url, admin_key, args.data, args.documents)
            open_s = open_knowledge_base(url, api_key, knowledge_base, queries[0])
            memory_loaded = resident_mib(service.pid)
            run_phase(url, api_key, knowledge_base, queries, 1, 2, 20, service.pid)  # warm-up
            load_before = os.getloadavg()
            phases = [run_phase(url, api_key, knowledge_base, queries, clients, args.seconds, args.max_requests,
                                service.pid)
                      for clients in (1, args.clients)]
            memory_after = resident_mib(service.pid)
        finally:
            stop_service(service)

    print_report(args, phases, load_before, ready_s, open_s, memory_loaded, memory_after)
    return 0


def upload_abstracts(url: str, admin_key: str, data: Path, documents: int) -> str:
    """Create a tenant and the knowledge base, upload the first `documents` SciFact abstracts; return the key."""
    abstracts = [document for _, document in zip(range(documents), corpus_documents(data / "corpus.jsonl"))]
    with DomainRagClient(url, admin_key=admin_key, timeout_s=600) as client:
        client.api_key = client.create_tenant("concurrency")["api_key"]
        client.create_or_get_knowledge_base(KNOWLEDGE_BASE)
        client.upload_documents(KNOWLEDGE_BASE, abstracts)
        return client.api_key


def print_report(args: argparse.Namespace, phases: list[dict], load_before: tuple[float, float, float],
                 ready_s: float, open_s: float, memory_loaded: tuple[float, float],
                 memory_after: tuple[float, float]) -> None:
    columns = ["clients", "requests", "errors", "seconds", "requests_per_second", "p50_ms", "p95_ms",
               "service_cpu_ms", "client_cpu_ms", "service_cores", "run_queue_cores"]
    print(format_table(["clients", "requests", "errors", "seconds", "requests/s", "p50 ms", "p95 ms",
                        "service CPU ms/request", "client CPU ms/request", "service cores", "run queue cores"],
                       [[phase[column] for column in columns] for phase in phases]))
    print("service cores: CPU seconds of the service per second. run queue cores: seconds per second that its "
          "threads were runnable but waited for a core, summed over threads.")
    for phase in phases:
        stages = ", ".join(f"{stage} {value:.1f}" for stage, value in phase["stage_ms"].items())
        print(f"mean ms per stage with {phase['clients']} clients (timings_ms): {stages}")
    ratio = phases[1]["requests_per_second"] / phases[0]["requests_per_second"]
    print(f"{args.clients} clients get {ratio:.2f}x the search throughput of 1 client")
    size = (f"{args.synthetic_chunks} synthetic chunks" if args.synthetic_chunks is not None
            else f"{args.documents} SciFact abstracts")
    print(f"knowledge base: {size}; service ready {ready_s:.1f} s after start, first search (opens the "
          f"knowledge base) {open_s:.1f} s")
    print(f"service resident memory MiB: {memory_loaded[0]:.0f} after the first search (peak {memory_loaded[1]:.0f}), "
          f"{memory_after[0]:.0f} after the phases (peak {memory_after[1]:.0f})")
    # Other work on the machine takes cores from both phases, and the load averages show how much there was.
    load_after = os.getloadavg()
    print("load average (1, 5, 15 min) before: " + ", ".join(f"{value:.2f}" for value in load_before)
          + "; after: " + ", ".join(f"{value:.2f}" for value in load_after))


if __name__ == "__main__":
    raise SystemExit(main())
