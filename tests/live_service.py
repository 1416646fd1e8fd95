"""A live service on a loopback port, run by uvicorn in a thread, with the fake embedder and generator."""

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn

from app.main import create_app
from tests.conftest import make_settings
from tests.fakes import FakeEmbedder, FakeGenerator


@contextmanager
def live_service(data_dir: Path, **overrides) -> Iterator[str]:
    """Serve the app on 127.0.0.1 at a free port; yields its base URL and stops the server on exit."""
    app = create_app(make_settings(data_dir, **overrides), embedder=FakeEmbedder(), generator=FakeGenerator())
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, name="live-service", daemon=True)
    thread.start()
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(base_url, thread)
        yield base_url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _wait_until_up(base_url: str, thread: threading.Thread, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not thread.is_alive():
            raise RuntimeError("the test service thread exited before it answered /healthz")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError(f"the test service at {base_url} did not answer /healthz within {timeout:.0f} s")
