"""Fuzz every operation of the OpenAPI schema against a live service on loopback: no response may be a 5xx.

Schemathesis generates valid (positive) and invalid (negative) requests from the schema. Each request is
sent with the key its route expects (four times in six), the other key or no key. Half of them name the
seeded knowledge base instead of a random one, so that generated bodies reach the search, query and upload
code rather than stopping at a 404. The number of requests sent is printed, run with `-s` to see it.
"""

import json
from collections import Counter

import httpx
import hypothesis
import hypothesis.errors
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from schemathesis import GenerationMode

from tests.conftest import ADMIN_KEY, MEDICAL_DOCUMENTS
from tests.live_service import live_service

EXAMPLES_PER_OPERATION_AND_MODE = 25
SERVER_ERROR = 500


def seed(base_url: str) -> dict[str, str]:
    """Create a tenant with a knowledge base 'fuzz', three documents and an alias 'live'; return its headers."""
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    key = httpx.post(f"{base_url}/v1/tenants", json={"name": "fuzzer"}, headers=admin).json()["api_key"]
    tenant = {"Authorization": f"Bearer {key}"}
    httpx.post(f"{base_url}/v1/knowledge-bases", json={"name": "fuzz"}, headers=tenant).raise_for_status()
    body = "\n".join(json.dumps(document) for document in MEDICAL_DOCUMENTS)
    httpx.post(f"{base_url}/v1/knowledge-bases/fuzz/documents", content=body.encode(),
               headers={**tenant, "Content-Type": "application/x-ndjson"}).raise_for_status()
    httpx.put(f"{base_url}/v1/aliases/live", json={"knowledge_base": "fuzz"}, headers=tenant).raise_for_status()
    return tenant


def test_no_server_errors(tmp_path):
    with live_service(tmp_path / "data", rate_limit_per_second=0, max_json_body_bytes=64 * 1024) as base_url:
        tenant = seed(base_url)
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        sent: list[tuple[str, int]] = []
        failures: list[str] = []

        for operation in operations:
            # Mostly the key the route expects, so that requests get past authentication; the rest use the
            # other key or none.
            expected, other = (admin, tenant) if operation.path.startswith("/v1/tenants") else (tenant, admin)
            credentials = st.sampled_from([expected, expected, expected, expected, other, {}])
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                strategy = operation.as_strategy(generation_mode=mode)

                @given(case=strategy, headers=credentials, seeded=st.booleans())
                @hypothesis.settings(max_examples=EXAMPLES_PER_OPERATION_AND_MODE, deadline=None, database=None,
                                     derandomize=True, suppress_health_check=list(HealthCheck),
                                     phases=[hypothesis.Phase.generate])
                def send(case, headers, seeded):
                    if seeded and case.path_parameters and "kb" in case.path_parameters:
                        case.path_parameters["kb"] = "fuzz"
                    response = case.call(base_url=base_url, headers=headers, timeout=30)
                    sent.append((operation.label, response.status_code))
                    if response.status_code >= SERVER_ERROR:
                        failures.append(f"{response.status_code} {case.as_curl_command()}\n{response.text[:500]}")

                try:
                    send()
                except hypothesis.errors.Unsatisfiable:
                    # An operation without parameters or body, such as GET /healthz, has no invalid form.
                    assert mode is GenerationMode.NEGATIVE, operation.label

        statuses = Counter(status for _, status in sent)
        print(f"\nfuzz: {len(sent)} requests over {len(operations)} operations; by status: "
              f"{dict(sorted(statuses.items()))}")
        assert len(sent) >= len(operations) * 2
        assert not failures, "\n\n".join(failures[:5])
        assert httpx.get(f"{base_url}/healthz").status_code == 200
