"""The `domainrag` command: serve, ingest, query, eval, create-tenant, finetune and demo."""

import argparse
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import httpx

from app.client import ApiError, DomainRagClient, JobFailedError, MissingApiKeyError
from evaluation.command import add_eval_arguments, run_eval

DEFAULT_URL = "http://127.0.0.1:8000"
REPOSITORY = Path(__file__).resolve().parent.parent
UPLOAD_BATCH_FILES = 200


def _service_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=os.environ.get("DOMAINRAG_URL", DEFAULT_URL),
                        help="service base URL (env DOMAINRAG_URL)")
    parser.add_argument("--api-key", default=os.environ.get("DOMAINRAG_API_KEY"),
                        help="tenant API key (env DOMAINRAG_API_KEY)")


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.logs import configure_logging
    from app.settings import get_settings

    configure_logging(args.log_level)
    settings = get_settings()
    uvicorn.run("app.main:create_app", factory=True, host=args.host or settings.host, port=args.port or settings.port,
                log_config=None, access_log=False, timeout_graceful_shutdown=settings.shutdown_timeout_s)
    return 0


def ingest(args: argparse.Namespace) -> int:
    """Upload files or folders in batches and show a progress bar over the documents processed."""
    from tqdm import tqdm

    if args.backend is not None and not args.create:
        print("error: --backend sets the backend of a knowledge base that --create creates; add --create, or "
              "use `domainrag migrate` to move an existing knowledge base to milvus", file=sys.stderr)
        return 2
    paths = []
    for argument in args.paths:
        path = Path(argument)
        if path.is_dir():
            # Files keep their path below the folder as label, so a/readme.md and b/readme.md stay two documents.
            paths.extend((p, p.relative_to(path).as_posix())
                         for p in sorted(path.rglob("*")) if p.is_file() and not p.name.startswith("."))
        elif path.is_file():
            paths.append((path, path.name))
        else:
            print(f"error: {argument} is not a file or folder", file=sys.stderr)
            return 2
    if not paths:
        print("error: no files to upload", file=sys.stderr)
        return 2
    client = DomainRagClient(args.url, api_key=args.api_key)
    if args.create:
        knowledge_base = client.create_or_get_knowledge_base(args.kb, backend=args.backend)
        if args.backend is not None and knowledge_base["backend"] != args.backend:
            move = f", move it with `domainrag migrate {args.kb} --to milvus`" if args.backend == "milvus" else ""
            print(f"error: knowledge base {args.kb!r} already exists on the {knowledge_base['backend']} backend, "
                  f"not {args.backend}; drop --backend to upload into it{move}, or choose another --kb",
                  file=sys.stderr)
            return 2

    totals = {"processed": 0, "failed": 0, "unchanged": 0}
    with tqdm(total=len(paths), unit="file", desc=f"ingest into {args.kb}") as progress:
        for start in range(0, len(paths), UPLOAD_BATCH_FILES):
            batch = paths[start:start + UPLOAD_BATCH_FILES]
            job_id = client.upload_files(args.kb, [path for path, _ in batch], [label for _, label in batch])
            job = client.wait_for_job(job_id, poll_interval_s=0.5)
            for key in totals:
                totals[key] += job[key]
            for error in job["errors"]:
                tqdm.write(f"  {error['source']}: {error['message']}")
            progress.update(len(batch))
    print(f"processed {totals['processed']} documents ({totals['unchanged']} unchanged), failed {totals['failed']}")
    return 0 if totals["failed"] == 0 else 1


def query(args: argparse.Namespace) -> int:
    client = DomainRagClient(args.url, api_key=args.api_key, timeout_s=600)
    if args.search:
        result = client.search(args.kb, args.question, args.top_k)
        for rank, hit in enumerate(result["hits"], start=1):
            print(f"{rank:>3}. {hit['document_id']} ({hit['score']:.4f}) {hit['text'][:100]!r}")
        return 0
    print_answer(client.query(args.kb, args.question, args.top_k))
    return 0


def print_answer(result: dict) -> None:
    print(result["answer"])
    print()
    for citation in result["citations"]:
        snippet = " ".join(citation["snippet"].split())[:160]
        print(f"[{citation['marker']}] {citation['document_id']} ({citation['chunk_id']}): {snippet}...")
    timings = ", ".join(f"{name} {value:.0f} ms" for name, value in result["timings_ms"].items())
    print(f"\ntimings: {timings}")


def create_tenant(args: argparse.Namespace) -> int:
    admin_key = args.admin_key or os.environ.get("DOMAINRAG_ADMIN_KEY")
    client = DomainRagClient(args.url, admin_key=admin_key)
    print(json.dumps(client.create_tenant(args.name), indent=2))
    return 0


def finetune(args: argparse.Namespace) -> int:
    """Train a LoRA adapter on question/answer pairs, with context retrieved from a knowledge base."""
    from tqdm import tqdm

    from app.settings import get_settings
    from generation.finetune import LoraOptions, build_examples, train_lora
    from generation.prompts import Passage
    from generation.registry import resolve_checkpoint

    records = [json.loads(line) for line in Path(args.train).read_text().splitlines() if line.strip()]
    records = records[args.offset:args.offset + args.limit if args.limit else None]
    missing = [i for i, record in enumerate(records) if not record.get("question") or not record.get("answer")]
    if missing:
        print(f"error: training lines {missing[:5]} lack \"question\" or \"answer\"", file=sys.stderr)
        return 2
    client = DomainRagClient(args.url, api_key=args.api_key, timeout_s=600)
    examples = []
    for record in tqdm(records, unit="question", desc="retrieve context"):
        hits = client.search(args.kb, record["question"], args.top_k)["hits"]
        passages = [Passage(marker=i + 1, rowid=i, document_id=hit["document_id"], chunk_id=hit["chunk_id"],
                            title=hit.get("title", ""), text=hit["text"], score=hit["score"])
                    for i, hit in enumerate(hits)]
        gold = set(record.get("gold_docs") or ([record["gold_doc"]] if record.get("gold_doc") else []))
        examples.extend(build_examples(record["question"], record["answer"], passages, gold))

    settings = get_settings()
    tokenizer, model = resolve_checkpoint(args.base, settings.all_backbones, cache_root=settings.data_dir / "models")
    options = LoraOptions(rank=args.rank, epochs=args.epochs, learning_rate=args.learning_rate)
    with tqdm(total=len(examples) * options.epochs, unit="step", desc="train LoRA") as progress:
        def on_step(step: int, loss: float) -> None:
            progress.set_postfix(loss=f"{loss:.3f}")
            progress.update(1)

        summary = train_lora(tokenizer, model, examples, Path(args.output), options=options, on_step=on_step)
    print(f"trained {summary['steps']} steps on {summary['examples']} examples; loss {summary['first_loss']:.3f} "
          f"-> {summary['last_loss']:.3f}; adapter in {args.output}")
    backbone = json.dumps({args.name: {"kind": "peft", "path": str(Path(args.output).resolve()), "base": args.base}})
    print(f"serve it with DOMAINRAG_BACKBONES='{backbone}' and \"generator\": \"{args.name}\"")
    return 0


def _wait_ready(client: httpx.Client, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited with status {process.returncode} before it was ready; "
                               "see the log lines above")
        try:
            if client.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the service was not ready after {timeout:.0f} s")


def demo(args: argparse.Namespace) -> int:
    """Start the service on an embedded data directory, ingest the example corpus and answer a question."""
    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    credentials_path = data_dir / "demo-credentials.json"
    credentials = json.loads(credentials_path.read_text()) if credentials_path.exists() else {}
    admin_key = os.environ.get("DOMAINRAG_ADMIN_KEY") or credentials.get("admin_key") or secrets.token_urlsafe(24)
    url = f"http://127.0.0.1:{args.port}"
    environment = {**os.environ, "DOMAINRAG_DATA_DIR": str(data_dir), "DOMAINRAG_ADMIN_KEY": admin_key,
                   "DOMAINRAG_HOST": "127.0.0.1", "DOMAINRAG_PORT": str(args.port), "HF_HUB_OFFLINE": "1"}
    print(f"starting the service on {url} with data in {data_dir}", flush=True)
    process = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--log-level", "WARNING"],
                               env=environment, cwd=REPOSITORY)
    try:
        with httpx.Client(base_url=url, timeout=600) as http:
            _wait_ready(http, process, timeout=600)
        client = DomainRagClient(url, api_key=credentials.get("api_key"), admin_key=admin_key, timeout_s=600)
        if "api_key" not in credentials:
            tenant = client.create_tenant(f"demo-{secrets.token_hex(3)}")
            credentials = {"admin_key": admin_key, "tenant": tenant["name"], "api_key": tenant["api_key"]}
            credentials_path.write_text(json.dumps(credentials, indent=2))
            credentials_path.chmod(0o600)
            client.api_key = tenant["api_key"]
        knowledge_base = client.create_or_get_knowledge_base("pubmed")
        corpus = REPOSITORY / "examples" / "pubmed_abstracts.ndjson"
        documents = [json.loads(line) for line in corpus.read_text().splitlines() if line.strip()]
        job = client.wait_for_job(client.upload_batch("pubmed", documents))
        print(f"knowledge base 'pubmed' ({knowledge_base['id']}): {job['processed']} documents processed, "
              f"{job['unchanged']} unchanged, {job['failed']} failed")

        question = args.question or json.loads((REPOSITORY / "examples" / "questions.json").read_text())[0]["question"]
        print(f"\nQ: {question}\n")
        print_answer(client.query("pubmed", question, top_k=args.top_k))
        print(f"\ntenant key saved in {credentials_path}; run `domainrag serve` with DOMAINRAG_DATA_DIR={data_dir} "
              "to keep the service up")
    except (ApiError, JobFailedError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        process.terminate()
        process.wait(timeout=60)
    return 0


def migrate(args: argparse.Namespace) -> int:
    """Ask the running service to move a knowledge base onto Milvus, copying stored embeddings."""
    # Through the service rather than on the data directory: the service's open indices switch at once, and
    # milvus-lite's file is never opened by two processes.
    client = DomainRagClient(args.url, api_key=args.api_key, timeout_s=args.timeout)
    result = client.migrate(args.kb, to=args.to)
    knowledge_base = result["knowledge_base"]
    print(f"knowledge base {knowledge_base['name']} ({knowledge_base['id']}) is on {knowledge_base['backend']}: "
          f"{result['chunks_copied']} chunks copied in {result['seconds']:.1f} s, none embedded again")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="domainrag", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    command = commands.add_parser("serve", help="run the HTTP service (settings from DOMAINRAG_* variables)")
    command.add_argument("--host", help="bind address (default DOMAINRAG_HOST or 127.0.0.1)")
    command.add_argument("--port", type=int, help="port (default DOMAINRAG_PORT or 8000)")
    command.add_argument("--log-level", default="INFO")
    command.set_defaults(handler=serve)

    command = commands.add_parser("ingest", help="upload files or folders into a knowledge base")
    command.add_argument("paths", nargs="+", help="files or folders (searched recursively)")
    command.add_argument("--kb", required=True, help="knowledge base name, id or alias")
    command.add_argument("--create", action="store_true", help="create the knowledge base if it does not exist")
    command.add_argument("--backend", choices=["local", "milvus"],
                         help="with --create: index backend of the new knowledge base (default: the service's "
                         "DOMAINRAG_DEFAULT_BACKEND)")
    _service_options(command)
    command.set_defaults(handler=ingest)

    command = commands.add_parser("query", help="ask a question (or search with --search)")
    command.add_argument("question")
    command.add_argument("--kb", required=True)
    command.add_argument("--top-k", type=int, default=5)
    command.add_argument("--search", action="store_true", help="print search hits instead of an answer")
    _service_options(command)
    command.set_defaults(handler=query)

    command = commands.add_parser("eval", help="measure retrieval and answer quality on a BEIR or QA dataset")
    add_eval_arguments(command)
    command.set_defaults(handler=run_eval)

    command = commands.add_parser("create-tenant", help="create a tenant and print its API key once")
    command.add_argument("name")
    command.add_argument("--admin-key", help="admin key (env DOMAINRAG_ADMIN_KEY)")
    command.add_argument("--url", default=os.environ.get("DOMAINRAG_URL", DEFAULT_URL))
    command.set_defaults(handler=create_tenant)

    command = commands.add_parser("finetune", help="train a LoRA adapter on question/answer pairs (CPU)")
    command.add_argument("--train", required=True, help='JSONL with "question", "answer", optional "gold_docs"')
    command.add_argument("--kb", required=True, help="knowledge base that supplies the retrieved context")
    command.add_argument("--output", required=True, help="folder for the adapter")
    command.add_argument("--base", default="smollm2", help="base backbone name or checkpoint path")
    command.add_argument("--name", default="finetuned", help="backbone name to print in the serving hint")
    command.add_argument("--top-k", type=int, default=3, help="passages retrieved per question")
    command.add_argument("--offset", type=int, default=0, help="skip this many training lines")
    command.add_argument("--limit", type=int, default=0, help="use at most this many lines (0: all)")
    command.add_argument("--epochs", type=int, default=1)
    command.add_argument("--rank", type=int, default=8, help="LoRA rank")
    command.add_argument("--learning-rate", type=float, default=2e-4)
    _service_options(command)
    command.set_defaults(handler=finetune)

    command = commands.add_parser("migrate", help="move a knowledge base's BM25 and dense indices onto Milvus")
    command.add_argument("kb", help="knowledge base name, id or alias")
    command.add_argument("--to", required=True, choices=["milvus"], help="the backend to move to")
    command.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the copy")
    _service_options(command)
    command.set_defaults(handler=migrate)

    command = commands.add_parser("demo", help="start the service, ingest examples/ and answer a question")
    command.add_argument("--data-dir", default=str(REPOSITORY / "data"))
    command.add_argument("--port", type=int, default=8000)
    command.add_argument("--question", help="question to ask (default: the first of examples/questions.json)")
    command.add_argument("--top-k", type=int, default=4)
    command.set_defaults(handler=demo)
    return parser


def describe_api_error(error: ApiError) -> str:
    """Return the service's own message for a failed request, or the whole error when it sent none."""
    try:
        detail = json.loads(error.body).get("detail")
    except (ValueError, AttributeError):
        detail = None
    if not isinstance(detail, str) or not detail:
        return str(error)
    return f"{detail} (HTTP {error.status_code} from {error.method} {error.url})"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except ApiError as error:
        print(f"error: {describe_api_error(error)}", file=sys.stderr)
        # A 4xx names something in the command to change, like a usage error; a 5xx is the service's failure.
        return 2 if 400 <= error.status_code < 500 else 1
    except JobFailedError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except MissingApiKeyError:
        print("error: this command needs a tenant API key: pass --api-key KEY or set DOMAINRAG_API_KEY",
              file=sys.stderr)
        return 2
    except httpx.TransportError as error:
        print(f"error: cannot reach the service at {getattr(args, 'url', DEFAULT_URL)}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
