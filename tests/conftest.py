import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.fakes import FakeEmbedder, FakeGenerator

ADMIN_KEY = "test-admin-key"
REPOSITORY = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def milvus_lite_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One milvus-lite file for the test session; each knowledge base has its own collection in it."""
    return str(tmp_path_factory.mktemp("milvus") / "milvus.db")


@pytest.fixture(autouse=True)
def index_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The index backend of new knowledge bases: local, unless a test is marked BOTH_INDEX_BACKENDS. Set through
    the environment, which every Settings built in the test reads."""
    backend = getattr(request, "param", "local")
    if backend == "milvus-lite":
        monkeypatch.setenv("DOMAINRAG_DEFAULT_BACKEND", "milvus")
        monkeypatch.setenv("DOMAINRAG_MILVUS_URI", request.getfixturevalue("milvus_lite_uri"))
    return backend


# Runs a test or class on both index backends of new knowledge bases.
BOTH_INDEX_BACKENDS = pytest.mark.parametrize("index_backend", ["local", "milvus-lite"], indirect=True)

# A PostgreSQL database the catalog tests may create schemas in; `bash .ci/run` starts a server and sets it.
TEST_DATABASE_URL = os.environ.get("DOMAINRAG_TEST_DATABASE_URL", "").strip()
CATALOG_BACKENDS = ["sqlite", "postgresql"]
# A test module runs on both catalogs with `pytestmark = BOTH_CATALOGS`; its tests then take `database_url`
# (directly or through `client`) and get a fresh SQLite file or a fresh PostgreSQL schema each.
BOTH_CATALOGS = pytest.mark.parametrize("catalog_backend", CATALOG_BACKENDS)


def make_settings(data_dir: Path, database_url: str | None = None, **overrides) -> Settings:
    return Settings(data_dir=data_dir, admin_key=ADMIN_KEY, chunk_size=64, chunk_overlap=8,
                    database_url=database_url, **overrides)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def catalog_backend() -> str:
    """SQLite unless the module parametrises it with BOTH_CATALOGS."""
    return "sqlite"


@pytest.fixture
def database_url(catalog_backend: str) -> Iterator[str | None]:
    """None for the default SQLite file under the data dir, or the URL of a fresh, empty PostgreSQL schema."""
    if catalog_backend == "sqlite":
        yield None
        return
    if not TEST_DATABASE_URL:
        pytest.skip("PostgreSQL catalog tests need DOMAINRAG_TEST_DATABASE_URL=postgresql://...; "
                    "`bash .ci/run` starts a throwaway server and sets it")
    with postgresql_schema() as url:
        yield url


@contextmanager
def postgresql_schema() -> Iterator[str]:
    """Create a schema of its own in the test database; yield a URL whose search_path is it; drop it after."""
    import psycopg

    schema = f"test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(TEST_DATABASE_URL, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    separator = "&" if "?" in TEST_DATABASE_URL else "?"
    try:
        yield f"{TEST_DATABASE_URL}{separator}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(TEST_DATABASE_URL, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


def stored_catalog_bytes(data_dir: Path, database_url: str | None) -> bytes:
    """Everything the catalog stores about tenants and keys, as bytes, to check that a secret is not among them."""
    if database_url is None:
        # Recent writes sit in the write-ahead log until a checkpoint copies them into the file.
        return b"".join(path.read_bytes() for path in data_dir.glob("catalog.sqlite3*"))
    import psycopg

    with psycopg.connect(database_url) as connection:
        rows = [*connection.execute("SELECT * FROM api_keys").fetchall(),
                *connection.execute("SELECT * FROM tenants").fetchall()]
    return b"\n".join(value if isinstance(value, bytes) else str(value).encode() for row in rows for value in row)


@pytest.fixture
def generator() -> FakeGenerator:
    return FakeGenerator()


@pytest.fixture
def client(data_dir: Path, database_url: str | None, generator: FakeGenerator) -> Iterator[TestClient]:
    app = create_app(make_settings(data_dir, database_url), embedder=FakeEmbedder(), generator=generator)
    with TestClient(app) as test_client:
        yield test_client


def create_tenant(client: TestClient, name: str = "acme") -> dict[str, str]:
    response = client.post("/v1/tenants", json={"name": name}, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['api_key']}"}


def upload_ndjson(client: TestClient, headers: dict[str, str], kb: str, documents: list[dict] | str) -> dict:
    body = documents if isinstance(documents, str) else "\n".join(json.dumps(d) for d in documents)
    response = client.post(f"/v1/knowledge-bases/{kb}/documents", content=body.encode(),
                           headers={**headers, "Content-Type": "application/x-ndjson"})
    assert response.status_code == 202, response.text
    return wait_for_job(client, headers, response.json()["job_id"])


def wait_for_job(client: TestClient, headers: dict[str, str], job_id: str, timeout: float = 120.0) -> dict:
    # Generous, because a job that embeds with the real models on a busy 2-core machine can take over 30 s.
    # A finished job returns at once, so passing tests do not wait longer.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}", headers=headers).json()
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


@pytest.fixture
def tenant(client: TestClient) -> dict[str, str]:
    return create_tenant(client)


MEDICAL_DOCUMENTS = [
    {"id": "aspirin", "title": "Aspirin and myocardial infarction",
     "text": "Low-dose aspirin reduces the risk of myocardial infarction in adults with cardiovascular disease. "
             "Bleeding is the main adverse effect."},
    {"id": "statins", "title": "Statins lower cholesterol",
     "text": "Statins inhibit HMG-CoA reductase and lower LDL cholesterol. Muscle pain is a common complaint."},
    {"id": "insulin", "title": "Insulin therapy",
     "text": "Insulin therapy controls blood glucose in type 1 diabetes. Hypoglycaemia is the main risk."},
]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        return listener.getsockname()[1]


class ServiceProcess:
    """`domainrag serve` in a subprocess on a loopback port, with the real embedder and the extractive generator.

    The test starts, stops and kills it, and its output goes to log_path. `environment` adds or overrides
    DOMAINRAG_* variables, for example a shared catalog's DOMAINRAG_DATABASE_URL.
    """

    def __init__(self, data_dir: Path, log_path: Path, *, name: str = "service", port: int | None = None,
                 environment: dict[str, str] | None = None) -> None:
        self.name = name
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.environment = {**os.environ, "DOMAINRAG_DATA_DIR": str(data_dir), "DOMAINRAG_ADMIN_KEY": ADMIN_KEY,
                            "DOMAINRAG_GENERATOR": "extractive", "DOMAINRAG_HOST": "127.0.0.1",
                            "DOMAINRAG_PORT": str(self.port), "DOMAINRAG_RATE_LIMIT_PER_SECOND": "0",
                            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(environment or {})}
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 240.0, log_level: str = "WARNING") -> None:
        """Launch the process and wait until /readyz returns 200."""
        self.launch(log_level)
        self.wait_ready(timeout)

    def launch(self, log_level: str = "WARNING") -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--log-level", log_level],
                                            cwd=REPOSITORY, env=self.environment, stdout=log,
                                            stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 240.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.process.returncode} during start-up; "
                                     f"log:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{self.name} not ready after {timeout:.0f} s; log:\n{self.log_tail()}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> int | None:
        """Send SIGTERM and return the exit status, or None when it had to be killed or never started."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            return None

    def log_tail(self, characters: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-characters:]
