"""Generated requests against a real server: schemathesis over /openapi.json, and generated Unicode.

No input may get a 5xx or a dropped connection. Both are bounded (examples per operation), so they run
in CI in well under a minute on the tiny model.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is a dev extra")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server_url(tiny_model_dir: Path) -> Iterator[str]:
    port = _free_port()
    cmd = [sys.executable, "-m", "distilsent", "serve", "--model", str(tiny_model_dir), "--port", str(port)]
    cmd += ["--no-access-log", "--max-input-chars", "2000"]
    proc = subprocess.Popen(cmd, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "the server exited"
            assert time.monotonic() < deadline, "the server was not ready in 60 s"
            try:
                if httpx.get(url + "/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def test_no_generated_request_gets_a_server_error(server_url: str) -> None:
    schema = schemathesis.openapi.from_url(server_url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/classify", "/predict", "/", "/info"}
    calls: list[int] = []
    for operation in operations:

        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        @given(case=operation.as_strategy())
        def check(case) -> None:
            response = case.call(base_url=server_url, timeout=30)
            calls.append(response.status_code)
            assert response.status_code < 500, (case.method, case.path, case.body, response.text[:300])
            content_type = (response.headers.get("content-type") or [""])[0]  # a list per header
            if response.status_code >= 400 and content_type.startswith("application/json"):
                assert set(response.json()) == {"error", "error_type"}, response.text[:300]

        check()
    assert len(calls) >= 4 * 10  # the generator did run


# Any code point, with the troublesome categories drawn often: lone surrogates (Cs, which a JSON
# client can send as \\ud800 escapes), control (Cc), format/zero-width (Cf), space separators (Zs) and
# combining marks (Mn); uniformly drawn code points are almost never surrogates.
unicode_texts = st.lists(
    st.one_of(
        st.characters(codec=None, exclude_categories=()),
        st.characters(codec=None, categories=["Cs", "Cc", "Cf", "Zs", "Mn"]),
    ),
    max_size=60,
).map("".join)  # st.text() never yields a surrogate


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(texts=st.lists(unicode_texts, min_size=1, max_size=4))
def test_generated_unicode_is_200_or_422_on_every_route(server_url: str, texts: list[str]) -> None:
    import json

    # json.dumps escapes a lone surrogate as \\ud800, which is what a client can send. /predict takes
    # TEI's batch shape, a list of one-text lists.
    bodies = {
        "/v1/classify": {"inputs": texts},
        "/predict": {"inputs": [[t] for t in texts]},
        "/": {"inputs": texts},
    }
    with httpx.Client(base_url=server_url, timeout=30) as client:
        for route, body in bodies.items():
            response = client.post(
                route, content=json.dumps(body).encode(), headers={"content-type": "application/json"}
            )
            assert response.status_code in (200, 422), (route, texts, response.text[:300])
            if response.status_code == 200:
                assert len(response.json()) == len(texts)
