"""Messages of request validation errors, through a small app that declares one field of each kind."""

from enum import Enum
from typing import Annotated, Literal

import pytest
from fastapi import FastAPI, Query
from fastapi.testclient import TestClient
from pydantic import Field, field_validator

from app.errors import format_input, format_location, install_error_handlers
from app.schemas import NAME_PATTERN, NAME_RULE, RequestModel


class Colour(str, Enum):
    red = "red"
    blue = "blue"


class Probe(RequestModel):
    count: int = Field(5, ge=1, le=50)
    floor: int = Field(16, ge=16)
    ratio: float = Field(0.5, gt=0, lt=1)
    step: int = Field(10, multiple_of=5)
    text: str = Field("x", min_length=1, max_length=10)
    tags: list[str] = Field(default_factory=list, max_length=2)
    mode: Literal["local", "global"] = "local"
    target: Literal["milvus"] = "milvus"
    colour: Colour = Colour.red
    name: str = Field("a", pattern=NAME_PATTERN)
    code: str = Field("A1", pattern="^[A-Z][0-9]$")
    flag: bool = False
    word: str = "word"

    @field_validator("word")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("word must contain text")
        return value


@pytest.fixture(scope="module")
def probe() -> TestClient:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/probe")
    def post_probe(body: Probe, limit: int = Query(10, ge=1, le=100),
                   q: Annotated[str | None, Query(max_length=3)] = None) -> dict:
        return {}

    return TestClient(app)


def message(client: TestClient, body: object, params: dict | None = None) -> str:
    response = client.post("/probe", json=body, params=params or {})
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert len(errors) == 1, errors
    assert response.json()["detail"] == errors[0]["msg"]
    return errors[0]["msg"]


@pytest.mark.parametrize(("body", "expected"), [
    ({"count": 0}, "count must be between 1 and 50; got 0"),
    ({"count": 100000}, "count must be between 1 and 50; got 100000"),
    ({"floor": 8}, "floor must be at least 16; got 8"),
    ({"ratio": 0}, "ratio must be greater than 0 and less than 1; got 0"),
    ({"ratio": 1.5}, "ratio must be greater than 0 and less than 1; got 1.5"),
    ({"step": 7}, "step must be a multiple of 5; got 7"),
    ({"text": ""}, "text must have between 1 and 10 characters; got 0"),
    ({"text": "x" * 11}, "text must have between 1 and 10 characters; got 11"),
    ({"tags": ["a", "b", "c"]}, "tags must have at most 2 items; got 3"),
    ({"mode": "both"}, "mode must be one of 'local', 'global'; got \"both\""),
    ({"target": "faiss"}, "target must be 'milvus'; got \"faiss\""),
    ({"colour": "green"}, "colour must be one of 'red', 'blue'; got \"green\""),
    ({"name": "../etc"}, f"invalid name \"../etc\"; use {NAME_RULE}"),
    ({"code": "a1"}, "code must match the regular expression '^[A-Z][0-9]$'; got \"a1\""),
    ({"count": "many"}, "count must be an integer; got \"many\""),
    ({"count": 1.5}, "count must be an integer; got 1.5"),
    ({"ratio": "half"}, "ratio must be a number; got \"half\""),
    ({"text": 3}, "text must be a string; got 3"),
    ({"flag": "maybe"}, "flag must be true or false; got \"maybe\""),
    ({"tags": "a"}, "tags must be a JSON array; got \"a\""),
    ({"tags": [1]}, "tags[0] must be a string; got 1"),
    ({"word": "  "}, "word must contain text; got \"  \""),
    ({"cont": 3}, "unknown field 'cont' (did you mean 'count'?); valid fields are: code, colour, count, flag, "
                  "floor, mode, name, ratio, step, tags, target, text, word"),
])
def test_body_field_messages(probe, body, expected):
    assert message(probe, body) == expected


def test_query_parameter_range(probe):
    assert message(probe, {}, {"limit": "0"}) == "limit must be between 1 and 100; got 0"


def test_query_parameter_length(probe):
    assert message(probe, {}, {"q": "long"}) == "q must have at most 3 characters; got 4"


def test_query_parameter_type(probe):
    assert message(probe, {}, {"limit": "ten"}) == "limit must be an integer; got ten"


def test_missing_body(probe):
    response = probe.post("/probe")
    assert response.status_code == 422
    assert response.json()["detail"] == ("request body is missing; send a JSON object with "
                                         "Content-Type: application/json")


def test_several_errors_joined_in_order(probe):
    response = probe.post("/probe", json={"count": 0, "mode": "x"})
    assert response.status_code == 422
    assert response.json()["detail"] == ("count must be between 1 and 50; got 0. "
                                         "mode must be one of 'local', 'global'; got \"x\"")
    assert [error["loc"] for error in response.json()["errors"]] == [["body", "count"], ["body", "mode"]]
    assert [error["type"] for error in response.json()["errors"]] == ["greater_than_equal", "literal_error"]


def test_location_format():
    assert format_location(("body", "retrievers", 1)) == "retrievers[1]"
    assert format_location(("query", "limit")) == "limit"
    assert format_location(("body",)) == "request body"


def test_long_input_cut_short():
    formatted = format_input("x" * 500)
    assert len(formatted) < 100
    assert formatted.endswith("...")


def test_unserialisable_input_shown_by_repr():
    assert format_input(b"\xff") == "b'\\xff'"


def raw_message(client: TestClient, content: bytes) -> str:
    response = client.post("/probe", content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    return response.json()["detail"]


def test_lone_surrogate_is_422_not_500(probe):
    # "\ud800" is valid JSON but no Unicode character, so UTF-8 cannot encode the message that echoes it.
    assert raw_message(probe, b'{"text": "a\\ud800"}') == ("text must be valid Unicode text, without lone "
                                                          'surrogates such as \\ud800; got "a\\ud800"')


def test_lone_surrogate_in_key(probe):
    assert raw_message(probe, b'{"\\udfff": 1}').startswith("request body must be valid Unicode text")


def test_not_a_number_gets_the_range(probe):
    assert raw_message(probe, b'{"count": NaN}') == "count must be between 1 and 50; got NaN"


def test_empty_key_is_named_as_sent(probe):
    assert message(probe, {"": 1}).startswith("unknown field ''; valid fields are:")
