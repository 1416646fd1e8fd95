"""A small run of benchmarks/load.py against a live service on loopback, with the fake models.

Sixteen query clients search and query through an alias while a bulk upload runs and the alias is swapped
five times a second; every response must be a non-5xx answer drawn wholly from one knowledge base.
"""

from benchmarks.load import format_report, run_load
from tests.conftest import ADMIN_KEY
from tests.live_service import live_service

CLIENTS = 16
DOCUMENTS = 300


def test_alias_swaps_under_load(tmp_path):
    with live_service(tmp_path / "data") as base_url:
        report = run_load(base_url, ADMIN_KEY, clients=CLIENTS, documents=DOCUMENTS, swap_every_s=0.2,
                          duration_s=40, max_requests=4000, timeout_s=30)
    print("\n" + format_report(report, CLIENTS))

    assert report.server_errors == 0
    assert report.transport_errors == 0
    assert report.wrong_answers == []
    assert report.requests > CLIENTS
    assert report.swaps >= 3
    assert report.answers_by_colour["blue"] > 0
    assert report.answers_by_colour["green"] > 0
    assert report.uploaded_documents == DOCUMENTS
    assert report.ingested_documents == DOCUMENTS
