"""The domainrag command's handling of missing credentials."""

from app.cli import main


def test_query_without_api_key_is_one_line_error(monkeypatch, capsys):
    monkeypatch.delenv("DOMAINRAG_API_KEY", raising=False)
    status = main(["query", "What lowers glucose?", "--kb", "medical", "--url", "http://127.0.0.1:9"])
    assert status == 2
    error = capsys.readouterr().err
    assert error.startswith("error: this command needs a tenant API key")
    assert "Traceback" not in error
