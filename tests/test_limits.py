"""Per-key request rate and concurrent-upload limits (429 with Retry-After) and request body limits (413)."""

import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest
from fastapi.testclient import TestClient

from app.errors import TooManyRequests
from app.limits import RateLimiter, UploadSlots
from app.main import create_app
from tests.conftest import create_tenant, make_settings
from tests.fakes import FakeEmbedder, FakeGenerator


@pytest.fixture
def client_with(data_dir) -> Iterator[Callable[..., TestClient]]:
    """Build a client whose app uses the given settings overrides; it is closed after the test."""
    stack = ExitStack()

    def build(**overrides) -> TestClient:
        app = create_app(make_settings(data_dir, **overrides), embedder=FakeEmbedder(), generator=FakeGenerator())
        return stack.enter_context(TestClient(app))

    with stack:
        yield build


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TestRateLimiter:
    def test_burst_then_rejects_with_retry_after(self):
        clock = FakeClock()
        limiter = RateLimiter(per_second=2.0, burst=3, clock=clock)
        for _ in range(3):
            limiter.acquire("key_a")
        with pytest.raises(TooManyRequests) as raised:
            limiter.acquire("key_a")
        assert raised.value.headers == {"Retry-After": "1"}
        assert "rate limit of 2 requests per second" in raised.value.message

    def test_tokens_refill_with_time(self):
        clock = FakeClock()
        limiter = RateLimiter(per_second=2.0, burst=1, clock=clock)
        limiter.acquire("key_a")
        clock.now += 0.5
        limiter.acquire("key_a")
        with pytest.raises(TooManyRequests):
            limiter.acquire("key_a")

    def test_retry_after_rounds_up_to_whole_seconds(self):
        clock = FakeClock()
        limiter = RateLimiter(per_second=0.25, burst=1, clock=clock)
        limiter.acquire("key_a")
        clock.now += 1.0
        with pytest.raises(TooManyRequests) as raised:
            limiter.acquire("key_a")
        assert raised.value.headers == {"Retry-After": "3"}

    def test_keys_have_separate_buckets(self):
        limiter = RateLimiter(per_second=1.0, burst=1, clock=FakeClock())
        limiter.acquire("key_a")
        limiter.acquire("key_b")
        with pytest.raises(TooManyRequests):
            limiter.acquire("key_a")

    def test_zero_rate_turns_limit_off(self):
        limiter = RateLimiter(per_second=0.0, burst=1, clock=FakeClock())
        for _ in range(100):
            limiter.acquire("key_a")


class TestUploadSlots:
    def test_rejects_over_maximum_and_frees_on_exit(self):
        slots = UploadSlots(2)
        with slots.hold("key_a"), slots.hold("key_a"):
            with pytest.raises(TooManyRequests) as raised:
                with slots.hold("key_a"):
                    pass
            assert raised.value.headers == {"Retry-After": "1"}
            with slots.hold("key_b"):
                pass
        with slots.hold("key_a"), slots.hold("key_a"):
            pass

    def test_slot_freed_when_body_raises(self):
        slots = UploadSlots(1)
        with pytest.raises(RuntimeError):
            with slots.hold("key_a"):
                raise RuntimeError("upload failed")
        with slots.hold("key_a"):
            pass


class TestRateLimitOverHttp:
    def test_fourth_request_is_429_with_retry_after(self, client_with):
        limited_client = client_with(rate_limit_per_second=0.1, rate_limit_burst=3)
        headers = create_tenant(limited_client)
        for _ in range(3):
            assert limited_client.get("/v1/knowledge-bases", headers=headers).status_code == 200
        response = limited_client.get("/v1/knowledge-bases", headers=headers)
        assert response.status_code == 429
        assert 1 <= int(response.headers["Retry-After"]) <= 10
        assert "DOMAINRAG_RATE_LIMIT_PER_SECOND" in response.json()["detail"]

    def test_other_key_of_same_tenant_unaffected(self, client_with):
        limited_client = client_with(rate_limit_per_second=0.1, rate_limit_burst=2)
        headers = create_tenant(limited_client)
        second = limited_client.post("/v1/keys", json={"role": "read-only"}, headers=headers).json()["api_key"]
        limited_client.get("/v1/knowledge-bases", headers=headers)
        assert limited_client.get("/v1/knowledge-bases", headers=headers).status_code == 429
        response = limited_client.get("/v1/knowledge-bases", headers={"Authorization": f"Bearer {second}"})
        assert response.status_code == 200

    def test_unauthenticated_requests_are_401_not_429(self, client_with):
        limited_client = client_with(rate_limit_per_second=0.1, rate_limit_burst=1)
        for _ in range(3):
            assert limited_client.get("/v1/knowledge-bases", headers={"Authorization": "Bearer x"}).status_code == 401


class TestConcurrentUploads:
    def test_upload_over_limit_is_429(self, client_with):
        limited_client = client_with(max_concurrent_uploads=1)
        headers = create_tenant(limited_client)
        limited_client.post("/v1/knowledge-bases", json={"name": "kb"}, headers=headers)
        key_id = limited_client.get("/v1/keys", headers=headers).json()["data"][0]["id"]
        body = json.dumps({"id": "a", "text": "alpha"}).encode()
        upload_headers = {**headers, "Content-Type": "application/x-ndjson"}

        # Holding the key's only slot stands in for an upload still streaming its body.
        with limited_client.app.state.limits.uploads.hold(key_id):
            response = limited_client.post("/v1/knowledge-bases/kb/documents", content=body, headers=upload_headers)
            assert response.status_code == 429
            assert response.headers["Retry-After"] == "1"
            assert "DOMAINRAG_MAX_CONCURRENT_UPLOADS" in response.json()["detail"]
            assert limited_client.get("/v1/knowledge-bases/kb/documents", headers=headers).status_code == 200

        response = limited_client.post("/v1/knowledge-bases/kb/documents", content=body, headers=upload_headers)
        assert response.status_code == 202


class TestBodyLimits:
    def test_json_body_over_declared_limit_is_413(self, client_with):
        limited_client = client_with(max_json_body_bytes=1000)
        headers = create_tenant(limited_client)
        response = limited_client.post("/v1/knowledge-bases", json={"name": "x" * 2000}, headers=headers)
        assert response.status_code == 413
        assert response.json()["detail"] == (
            "request body of 2011 bytes exceeds the limit of 1000 bytes (DOMAINRAG_MAX_JSON_BODY_BYTES); "
            "send a smaller request")
        assert "X-Request-ID" in response.headers

    def test_streamed_json_body_over_limit_is_413(self, client_with):
        limited_client = client_with(max_json_body_bytes=1000)
        headers = create_tenant(limited_client)
        limited_client.post("/v1/knowledge-bases", json={"name": "kb"}, headers=headers)

        def chunks():
            yield b'{"query": "'
            for _ in range(20):
                yield b"a" * 100
            yield b'"}'

        # A generator body is sent without Content-Length, so only the byte count while streaming can stop it.
        response = limited_client.post("/v1/knowledge-bases/kb/search", content=chunks(),
                                       headers={**headers, "Content-Type": "application/json"})
        assert response.status_code == 413
        assert response.json()["detail"] == (
            "request body exceeds the limit of 1000 bytes (DOMAINRAG_MAX_JSON_BODY_BYTES); send a smaller request")

    def test_body_under_limit_passes(self, client_with):
        limited_client = client_with(max_json_body_bytes=1000)
        headers = create_tenant(limited_client)
        limited_client.post("/v1/knowledge-bases", json={"name": "kb"}, headers=headers)
        response = limited_client.post("/v1/knowledge-bases/kb/search", json={"query": "a" * 900}, headers=headers)
        assert response.status_code == 200

    def test_tenant_creation_body_is_bounded(self, client_with):
        limited_client = client_with(max_json_body_bytes=1000)
        response = limited_client.post("/v1/tenants", content=b"{" + b" " * 5000 + b"}",
                                       headers={"Authorization": "Bearer test-admin-key",
                                                "Content-Type": "application/json"})
        assert response.status_code == 413

    def test_upload_route_uses_upload_limit(self, client_with):
        limited_client = client_with(max_json_body_bytes=100, max_upload_bytes=5000)
        tenant = create_tenant(limited_client)
        limited_client.post("/v1/knowledge-bases", json={"name": "kb"}, headers=tenant)
        headers = {**tenant, "Content-Type": "application/x-ndjson"}
        small = json.dumps({"id": "a", "text": "b" * 1000}).encode()
        assert limited_client.post("/v1/knowledge-bases/kb/documents", content=small, headers=headers).status_code == 202

        large = json.dumps({"id": "a", "text": "b" * 6000}).encode()
        response = limited_client.post("/v1/knowledge-bases/kb/documents", content=large, headers=headers)
        assert response.status_code == 413
        assert "DOMAINRAG_MAX_UPLOAD_BYTES" in response.json()["detail"]

    def test_streamed_upload_over_limit_is_413(self, client_with):
        limited_client = client_with(max_json_body_bytes=100, max_upload_bytes=5000)
        tenant = create_tenant(limited_client)
        limited_client.post("/v1/knowledge-bases", json={"name": "kb"}, headers=tenant)
        headers = {**tenant, "Content-Type": "application/x-ndjson"}

        def lines():
            for number in range(100):
                yield json.dumps({"id": str(number), "text": "b" * 100}).encode() + b"\n"

        response = limited_client.post("/v1/knowledge-bases/kb/documents", content=lines(), headers=headers)
        assert response.status_code == 413
        assert "DOMAINRAG_MAX_UPLOAD_BYTES" in response.json()["detail"]
