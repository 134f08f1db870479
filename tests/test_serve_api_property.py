"""Property-based API test: schemathesis generates requests from the app's own OpenAPI document
(valid and invalid bodies, headers, paths) against a real uvicorn server; none may get a 5xx."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
import schemathesis
from conftest import LiveServer
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from bridgetune.config import ServeConfig
from bridgetune.inference.predictor import Predictor
from bridgetune.serve import create_app

ADMIN_KEY = "admin-secret"


@pytest.fixture(scope="module")
def live(served_classifier: Path, tmp_path_factory: pytest.TempPathFactory):
    config = ServeConfig(
        feedback_db=str(tmp_path_factory.mktemp("fuzz") / "feedback.db"),
        admin_keys=[ADMIN_KEY],
        max_texts=16,
        max_body_bytes=20_000,
    )
    with LiveServer(create_app(Predictor.load(served_classifier), config)) as server:
        yield server


@pytest.mark.slow  # property-based requests against a live server (~10 s)
def test_no_request_gets_a_server_error(live: LiveServer) -> None:
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    labels = []
    for result in schema.get_all_operations():
        operation = result.ok()
        labels.append(operation.label)
        _fuzz(operation, GenerationMode.POSITIVE)
        if operation.method.upper() == "POST":  # GETs take no input to make invalid
            _fuzz(operation, GenerationMode.NEGATIVE)
    assert "POST /v1/predict" in labels and "POST /v1/feedback" in labels
    served = _request_counts(live.url)
    assert served.get(("/v1/predict", "200"), 0) >= 5  # valid bodies reached the model
    assert served.get(("/v1/predict", "422"), 0) >= 5  # invalid ones were refused cleanly
    assert not [key for key in served if key[1].startswith("5")]


def _request_counts(url: str) -> dict[tuple[str, str], float]:
    text = httpx.get(f"{url}/metrics").text
    counts = {}
    for line in text.splitlines():
        match = re.match(
            r'bridgetune_requests_total\{endpoint="([^"]+)",method="\w+",'
            r'status="(\d+)"\} (\S+)',
            line,
        )
        if match:
            key = (match.group(1), match.group(2))
            counts[key] = counts.get(key, 0) + float(match.group(3))
    return counts


def _fuzz(operation, mode) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def run(case) -> None:
        case.call_and_validate(
            headers={"X-API-Key": ADMIN_KEY}, checks=[not_a_server_error], timeout=30
        )

    run()


CONTENT_TYPES = [
    None,
    "application/json",
    "application/json; charset=utf-8",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/xml",
    "application/vnd.api+json",
    "",
]


def _texts_with_bad_unicode():
    """JSON bodies whose strings may hold lone surrogates, as raw bytes or JSON escapes."""
    from hypothesis import strategies as st

    text = st.text(st.characters(categories=["Cs", "Lu", "Ll", "Nd", "Zs", "Lo"]))
    texts = st.lists(text, min_size=1, max_size=4)
    as_json = texts.map(lambda items: json.dumps({"texts": items}).encode())
    raw = st.binary(max_size=64).map(lambda junk: b'{"texts": ["' + junk + b'"]}')
    return st.one_of(as_json, raw)


def test_content_types_and_invalid_unicode_never_get_a_server_error(live: LiveServer) -> None:
    from hypothesis import strategies as st

    seen: dict[int, int] = {}

    @given(
        path=st.sampled_from(["/v1/predict", "/v1/feedback", "/admin/reload"]),
        content_type=st.sampled_from(CONTENT_TYPES),
        body=_texts_with_bad_unicode(),
    )
    @settings(max_examples=60, deadline=None, derandomize=True, database=None)
    def run(path: str, content_type: str | None, body: bytes) -> None:
        headers = {"X-API-Key": ADMIN_KEY}
        if content_type is not None:
            headers["Content-Type"] = content_type
        response = httpx.post(f"{live.url}{path}", content=body, headers=headers, timeout=30)
        assert response.status_code < 500, (path, content_type, body, response.text)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1

    run()
    assert seen.get(415, 0) >= 5 and seen.get(422, 0) >= 5, seen  # both refusals were reached
