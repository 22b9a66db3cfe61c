from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import distilsent
from distilsent.serve import ServeConfig, create_app
from distilsent.serve.batching import Batcher, DeadlineError, QueueFullError
from helpers import approx_scores

TEXTS = ["a wonderful film", "dull and far too long", "an ok movie"]


def run_app(
    scenario: Callable[[httpx.AsyncClient, Any], Awaitable[None]],
    classifier: distilsent.Classifier | None = None,
    *,
    wait_ready: bool = True,
    load: distilsent.LoadConfig | None = None,
    **serve: Any,
) -> None:
    """Run ``scenario(client, state)`` against an in-process app, lifespan included."""
    app = create_app(
        ServeConfig(access_log=serve.pop("access_log", False), **serve), load, classifier=classifier
    )
    state = app.state.distilsent

    async def main() -> None:
        async with app.router.lifespan_context(app):
            if wait_ready:
                for _ in range(400):
                    if state.ready:
                        break
                    await asyncio.sleep(0.025)
                assert state.ready, state.load_error
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                await scenario(client, state)

    asyncio.run(main())


def assert_close(actual: Any, expected: Any, tol: float = 1e-5) -> None:
    """Equal structure and keys, numbers within ``tol``."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and list(actual) == list(expected), (actual, expected)
        for key in expected:
            assert_close(actual[key], expected[key], tol)
    elif isinstance(expected, (list, tuple)):
        assert isinstance(actual, list) and len(actual) == len(expected), (actual, expected)
        for a, e in zip(actual, expected):
            assert_close(a, e, tol)
    elif isinstance(expected, float):
        assert actual == pytest.approx(expected, abs=tol)
    else:
        assert actual == expected


def assert_error(response: httpx.Response, status: int, *needles: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "error_type"}, body
    assert "Traceback" not in body["error"]
    for needle in needles:
        assert needle in body["error"], body
    return body


@pytest.fixture
def classifier(tiny_model_dir: Path) -> distilsent.Classifier:
    return distilsent.load(tiny_model_dir, device="cpu")


def test_classify_matches_the_python_api(classifier: distilsent.Classifier) -> None:
    expected = [p.to_dict() for p in classifier.predict(TEXTS)]

    async def scenario(client: httpx.AsyncClient, state: Any) -> None:
        one = await client.post("/v1/classify", json={"inputs": TEXTS[0]})
        assert one.status_code == 200
        assert_close(one.json(), expected[0])
        many = await client.post("/v1/classify", json={"inputs": TEXTS})
        assert_close(many.json(), expected)
        top = await client.post("/v1/classify", json={"inputs": TEXTS, "top_k": 1})
        assert all(len(p["scores"]) == 1 for p in top.json())
        raw = await client.post("/v1/classify", json={"inputs": TEXTS[0], "function_to_apply": "none"})
        np.testing.assert_allclose(
            list(raw.json()["scores"].values()),
            sorted(classifier.logits(TEXTS[:1])[0], reverse=True),
            atol=1e-5,
        )
        # curl -d sends form-encoded content type; the body is JSON all the same.
        curl = await client.post(
            "/v1/classify",
            content=json.dumps({"inputs": TEXTS[0]}),
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert_close(curl.json(), expected[0])

    run_app(scenario, classifier)


def test_classify_options_long_texts_and_neutral_band(tiny_model_dir: Path) -> None:
    clf = distilsent.load(tiny_model_dir, device="cpu", max_length=16, stride=4)
    long_text = " ".join(["a wonderful film but dull and far too long"] * 10)
    chunked = distilsent.load(tiny_model_dir, device="cpu", max_length=16, stride=4, long="chunk").predict(
        long_text
    )
    banded = distilsent.load(tiny_model_dir, device="cpu", neutral_band="0:1").predict(TEXTS[0])

    async def scenario(client: httpx.AsyncClient, state: Any) -> None:
        r = await client.post("/v1/classify", json={"inputs": long_text, "long": "chunk"})
        assert_close(r.json(), chunked.to_dict())
        assert r.json()["windows"] > 1
        r = await client.post("/v1/classify", json={"inputs": long_text, "truncate": False})
        assert_error(r, 413, "longer than max_length", "truncate=true")
        r = await client.post("/v1/classify", json={"inputs": TEXTS[0], "neutral_band": "0:1"})
        assert r.json()["label"] == banded.label == "NEUTRAL"
        # A per-request max_length reads as far as predict(max_length=...) does, and no further.
        for length in (8, 40):
            r = await client.post("/v1/classify", json={"inputs": [long_text], "max_length": length})
            assert_close(r.json(), [clf.predict(long_text, max_length=length).to_dict()])
        short = " ".join(long_text.split()[:10])
        r = await client.post("/v1/classify", json={"inputs": short, "max_length": 40, "truncate": False})
        assert r.status_code == 200
        r = await client.post("/v1/classify", json={"inputs": short, "max_length": 8, "truncate": False})
        assert_error(r, 413, "longer than max_length (8 tokens)")
        r = await client.post("/v1/classify", json={"inputs": short, "max_length": 40, "long": "chunk"})
        assert_error(r, 422, "max_length", "long='truncate'")
        assert (await client.post("/v1/classify", json={"inputs": "x", "max_length": 2})).status_code == 422
        assert_error(
            await client.post("/v1/classify", json={"inputs": "x", "neutral_band": "9"}), 422, "neutral_band"
        )

    run_app(scenario, clf)


def test_a_neutral_band_on_a_three_label_model_is_refused(tmp_path: Path) -> None:
    from helpers import build_tiny_model

    clf = distilsent.load(build_tiny_model(tmp_path / "m", labels=("A", "B", "C")), device="cpu")

    async def scenario(client: httpx.AsyncClient, state: Any) -> None:
        r = await client.post("/v1/classify", json={"inputs": "x", "neutral_band": "0.4:0.6"})
        assert_error(r, 422, "two-label model")

    run_app(scenario, clf)


def test_tei_predict_shape(classifier: distilsent.Classifier, tiny_model_dir: Path) -> None:
    probs = classifier.predict_proba(TEXTS)
    logits = classifier.logits(TEXTS)
    pair = classifier.predict(("a wonderful film", "dull and far too long"))
    long_text = "the start is great " + "filler " * 300 + "the end is awful"
    head = classifier.predict(long_text)
    tail = distilsent.load(tiny_model_dir, device="cpu", truncation_side="tail").predict(long_text)

    def scores(entries: list[dict[str, Any]]) -> dict[str, float]:
        assert [e["score"] for e in entries] == sorted((e["score"] for e in entries), reverse=True)
        return {e["label"]: e["score"] for e in entries}

    async def scenario(client: httpx.AsyncClient, state: Any) -> None:
        r = await client.post("/predict", json={"inputs": TEXTS[0]})
        assert scores(r.json()) == approx_scores(dict(zip(classifier.labels, probs[0])))
        # TEI's batch is a list of lists; a list of two strings is one pair.
        r = await client.post("/predict", json={"inputs": [[t] for t in TEXTS], "raw_scores": True})
        for row, expected in zip(r.json(), logits, strict=True):
            assert scores(row) == approx_scores(dict(zip(classifier.labels, expected)))
        r = await client.post("/predict", json={"inputs": ["a wonderful film", "dull and far too long"]})
        assert scores(r.json()) == approx_scores(pair.scores)
        r = await client.post(
            "/predict", json={"inputs": [["a wonderful film", "dull and far too long"], [TEXTS[1]]]}
        )
        assert [scores(row) for row in r.json()] == [
            approx_scores(pair.scores),
            approx_scores(dict(zip(classifier.labels, probs[1]))),
        ]
        assert_error(await client.post("/predict", json={"inputs": TEXTS}), 422, "one text pair")
        assert_error(await client.post("/predict", json={"inputs": []}), 400, "empty")
        # Truncation as in TEI >= 1.9: on unless truncate=false, which refuses with 422.
        assert scores((await client.post("/predict", json={"inputs": long_text})).json()) == approx_scores(
            head.scores
        )
        assert_error(
            await client.post("/predict", json={"inputs": long_text, "truncate": False}), 422, "truncate"
        )
        r = await client.post("/predict", json={"inputs": long_text, "truncation_direction": "Left"})
        assert scores(r.json()) == approx_scores(tail.scores)
        # Unknown fields are ignored, as TEI does; /invocations is the same route.
        r = await client.post("/invocations", json={"inputs": TEXTS[0], "normalize": True})
        assert scores(r.json()) == approx_scores(dict(zip(classifier.labels, probs[0])))

    run_app(scenario, classifier)


def test_tei_info_tokenize_decode_health(classifier: distilsent.Classifier) -> None:
    async def scenario(client: httpx.AsyncClient, state: Any) -> None:
        info = (await client.get("/info")).json()
        assert info["model_type"]["classifier"]["id2label"] == {"0": "NEGATIVE", "1": "POSITIVE"}
        assert info["max_input_length"] == 128 and info["auto_truncate"] is True
        assert info["max_client_batch_size"] == 1024 and info["distilsent"]["labels"] == classifier.labels
        tokens = (await client.post("/tokenize", json={"inputs": "good film"})).json()
        assert [t["text"] for t in tokens[0]] == classifier.tokenizer.encodings(["good film"])[0].tokens
        assert tokens[0][0] == {
            "id": classifier.tokenizer.cls_id,
            "text": "[CLS]",
            "special": True,
            "start": None,
            "stop": None,
        }
        assert tokens[0][-2]["start"] == 5 and tokens[0][-2]["stop"] == 9
        plain = (
            await client.post("/tokenize", json={"inputs": ["good film"], "add_special_tokens": False})
        ).json()
        assert [t["id"] for t in plain[0]] == [t["id"] for t in tokens[0][1:-1]]
        ids = [t["id"] for t in tokens[0]]
        assert (await client.post("/decode", json={"ids": ids})).json() == ["good film"]
        assert (await client.post("/decode", json={"ids": [ids, ids[1:3]]})).json()[0] == "good film"
        assert_error(await client.post("/decode", json={"ids": [10**9]}), 422, "not a token id")
        for path in ("/health", "/ping", "/live", "/ready"):
            assert (await client.get(path)).status_code == 200

    run_app(scenario, classifier)


def test_health_and_ping_say_503_until_the_model_is_ready(tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient, state: Any) -> None:
        for _ in range(200):
            if state.load_error:
                break
            await asyncio.sleep(0.02)
        for path in ("/health", "/ping", "/ready"):
            assert_error(await client.get(path), 503, "failed to load")
        assert (await client.get("/live")).status_code == 200

    run_app(scenario, None, wait_ready=False, load=distilsent.LoadConfig(model=str(tmp_path / "missing")))


def test_hugging_face_inference_shape(classifier: distilsent.Classifier) -> None:
    expected = classifier.predict(TEXTS[0])

    async def scenario(client: httpx.AsyncClient, state: Any) -> None:
        r = await client.post("/", json={"inputs": TEXTS[0]})
        assert r.json() == [[{"label": k, "score": approx_scores(v)} for k, v in expected.scores.items()]]
        r = await client.post("/", json={"inputs": TEXTS, "parameters": {"top_k": 1}})
        assert [len(x) for x in r.json()] == [1, 1, 1]

    run_app(scenario, classifier)


def test_explain_endpoint(classifier: distilsent.Classifier) -> None:
    expected = classifier.explain("a wonderful film")

    async def scenario(client: httpx.AsyncClient, state: Any) -> None:
        r = await client.post("/v1/explain", json={"inputs": "a wonderful film"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert [w["word"] for w in body["words"]] == ["a", "wonderful", "film"]
        assert_close([w["score"] for w in body["words"]], [w.score for w in expected.words], tol=1e-4)
        assert body["label"] == expected.label
        assert_error(await client.post("/v1/explain", json={"inputs": "x", "target": "MAYBE"}), 422, "target")
        assert_error(await client.post("/v1/explain", json={"inputs": ""}), 422, "empty")
        assert (await client.get("/info")).json()["distilsent"]["explain"] is True

    run_app(scenario, classifier)


def test_every_input_error_is_json_naming_the_field(classifier: distilsent.Classifier) -> None:
    async def scenario(client: httpx.AsyncClient, state: Any) -> None:
        post = client.post
        assert_error(await post("/v1/classify", content=b"{inputs"), 422, "not valid JSON")
        assert_error(await post("/v1/classify", json={"inputs": 3}), 422, "inputs")
        assert_error(await post("/v1/classify", json={"text": "x"}), 422, "inputs")
        assert_error(await post("/v1/classify", json={"inputs": ["fine", " "]}), 422, "inputs[1]", "empty")
        assert_error(await post("/v1/classify", json={"inputs": []}), 422, "inputs", "empty")
        assert_error(await post("/v1/classify", json={"inputs": ["x"] * 11}), 422, "11 texts", "limit of 10")
        assert_error(await post("/v1/classify", json={"inputs": "y" * 301}), 422, "301 characters")
        assert_error(await post("/v1/classify", json={"inputs": "x", "top_k": 0}), 422, "top_k")
        assert_error(await post("/v1/classify", json={"inputs": "x", "long": "all"}), 422, "long")
        assert_error(await post("/v1/classify", json={"inputs": "x", "truncate": "no"}), 422, "truncate")
        assert_error(
            await post("/predict", json={"inputs": [["a", "b", "c"]]}), 422, "inputs[0]", "3 strings"
        )
        assert_error(await post("/predict", json={"inputs": [["fine"], [" "]]}), 422, "inputs[1]", "empty")
        assert_error(await post("/", json={"inputs": "x", "parameters": {"top_k": "all"}}), 422, "top_k")
        body = json.dumps({"inputs": "z" * 2000})
        assert_error(await post("/v1/classify", content=body), 413, "larger than 1024 bytes")
        assert_error(await client.get("/nowhere"), 404)
        assert_error(await client.get("/v1/classify"), 405)

    run_app(scenario, classifier, max_inputs=10, max_input_chars=300, max_body_bytes=1024)


def test_queue_full_is_429_with_retry_after(classifier: distilsent.Classifier) -> None:
    original = classifier.run

    def slow(batch: list[list[int]]) -> np.ndarray:
        time.sleep(0.3)
        return original(batch)

    async def scenario(client: httpx.AsyncClient, state: Any) -> None:
        classifier.run = slow  # type: ignore[method-assign]
        first = asyncio.create_task(client.post("/v1/classify", json={"inputs": "one"}))
        await asyncio.sleep(0.05)
        r = await client.post("/v1/classify", json={"inputs": "two"})
        assert_error(r, 429, "busy")
        assert r.headers["retry-after"] == "1"
        assert (await first).status_code == 200

    run_app(scenario, classifier, max_concurrent=1, max_wait_ms=0)


def test_work_admitted_from_headers_counts_until_it_is_queued(classifier: distilsent.Classifier) -> None:
    import contextvars

    async def scenario(client: httpx.AsyncClient, state: Any) -> None:
        batcher = state.batcher
        original = batcher.submit
        during: list[int] = []

        async def submit(sequences: Any, timing: Any = None) -> Any:
            during.append(state.arriving_tokens)
            return await original(sequences, timing)

        batcher.submit = submit
        texts = ["a fine film"] * 8
        assert (await client.post("/v1/classify", json={"inputs": texts})).status_code == 200
        # Released before the batcher queued it (the batcher counts it from there), and nothing is left.
        assert during == [0] and state.arriving_tokens == 0
        assert_error(await client.post("/v1/classify", json={"inputs": ""}), 422)  # never queued
        assert state.arriving_tokens == 0

        # A burst: every request's headers arrive before any body is queued. At 1,000 tokens/s the
        # 0.5 s wait holds 500 tokens; an 800-byte body is taken to hold 200, so the third would
        # finish 0.6 s out and is refused from its headers, as the batcher would refuse it.
        batcher.tokens_per_second = 1000.0
        burst = [contextvars.copy_context() for _ in range(3)]
        answers = [ctx.run(state.shed, 800) for ctx in burst]
        assert answers[0] is None and answers[1] is None
        assert answers[2].status_code == 429 and b"0.6 s of work with this request" in answers[2].body
        assert state.arriving_tokens == 400
        for ctx in burst:
            ctx.run(state.arrived)
            ctx.run(state.arrived)  # a second release is a no-op
        assert state.arriving_tokens == 0
        # Into an empty queue goes any request, however large (as Batcher.submit admits it).
        assert burst[0].run(state.shed, 40_000) is None
        burst[0].run(state.arrived)

    run_app(scenario, classifier)


def test_not_ready_is_503_until_the_model_is_warm(classifier: distilsent.Classifier) -> None:
    release = threading.Event()
    original = classifier.predict

    def blocked(*args: Any, **kwargs: Any) -> Any:
        release.wait(10)
        return original(*args, **kwargs)

    classifier.predict = blocked  # type: ignore[method-assign]

    async def scenario(client: httpx.AsyncClient, state: Any) -> None:
        assert (await client.get("/live")).status_code == 200
        assert_error(await client.get("/ready"), 503, "loading")
        assert_error(await client.get("/health"), 503, "loading")  # TEI: healthy means it answers
        r = await client.post("/v1/classify", json={"inputs": "x"})
        assert_error(r, 503, "loading")
        assert r.headers["retry-after"]
        release.set()
        for _ in range(200):
            if (await client.get("/ready")).status_code == 200:
                break
            await asyncio.sleep(0.02)
        assert (await client.post("/v1/classify", json={"inputs": "x"})).status_code == 200

    run_app(scenario, classifier, wait_ready=False)


def test_model_that_fails_to_load_is_503_with_the_reason(tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient, state: Any) -> None:
        for _ in range(200):
            if state.load_error:
                break
            await asyncio.sleep(0.02)
        assert_error(await client.get("/ready"), 503, "failed to load", "nothing-here")

    load = distilsent.LoadConfig(model=str(tmp_path / "nothing-here"))
    run_app(scenario, None, wait_ready=False, load=load)


def test_api_keys(
    classifier: distilsent.Classifier,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text("# team keys\nfile-key\n")
    monkeypatch.setenv("DISTILSENT_API_KEYS", "env-key")

    async def scenario(client: httpx.AsyncClient, state: Any) -> None:
        body = {"inputs": "x"}
        assert_error(await client.post("/v1/classify", json=body), 401, "missing API key")
        bad = {"Authorization": "Bearer wrong"}
        assert_error(await client.post("/v1/classify", json=body, headers=bad), 401, "invalid API key")
        for headers in (
            {"Authorization": "Bearer flag-key"},
            {"authorization": "bearer file-key"},
            {"X-API-Key": "env-key"},
        ):
            assert (await client.post("/v1/classify", json=body, headers=headers)).status_code == 200
        assert_error(await client.get("/metrics"), 401)
        assert_error(await client.get("/info"), 401)
        for open_path in ("/health", "/ready", "/", "/ping", "/live"):
            assert (await client.get(open_path)).status_code == 200

    with caplog.at_level(logging.INFO, logger="distilsent.access"):
        run_app(scenario, classifier, api_keys=("flag-key",), api_key_file=str(key_file), access_log=True)
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "distilsent.access"]
    assert {line["status"] for line in lines} >= {200, 401}
    assert not any(k in caplog.text for k in ("flag-key", "file-key", "env-key", "wrong"))


def test_serve_config_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_concurrent"):
        ServeConfig(max_concurrent=0)
    with pytest.raises(ValueError, match="port"):
        ServeConfig(port=70000)
    with pytest.raises(ValueError, match="empty"):
        ServeConfig(api_keys=(" ",))
    with pytest.raises(ValueError, match="cannot read api_key_file"):
        ServeConfig(api_key_file=str(tmp_path / "missing")).keys()
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="holds no key"):
        ServeConfig(api_key_file=str(tmp_path / "empty")).keys()


def test_metrics_info_and_openapi(classifier: distilsent.Classifier) -> None:
    async def scenario(client: httpx.AsyncClient, state: Any) -> None:
        await client.post("/v1/classify", json={"inputs": TEXTS})
        await client.post("/v1/classify", json={"inputs": ""})
        text = (await client.get("/metrics")).text
        assert 'distilsent_requests_total{route="/v1/classify",status="200"} 1.0' in text
        assert 'distilsent_requests_total{route="/v1/classify",status="422"} 1.0' in text
        assert "distilsent_request_seconds_bucket" in text
        assert "distilsent_batch_size_count 1.0" in text
        assert "distilsent_texts_total 3.0" in text
        assert "distilsent_queue_depth 0.0" in text
        assert "distilsent_texts_per_second" in text
        info = (await client.get("/info")).json()
        mine = info["distilsent"]
        assert mine["labels"] == classifier.labels and mine["limits"]["max_inputs"] == 1024
        spec = (await client.get("/openapi.json")).json()
        assert {"/v1/classify", "/predict", "/", "/health", "/ready", "/metrics", "/info"} <= set(
            spec["paths"]
        )
        assert (await client.get("/docs")).status_code == 200
        page = await client.get("/")
        assert page.headers["content-type"].startswith("text/html") and 'id="classify"' in page.text

    run_app(scenario, classifier)


def test_tei_metrics_and_timing_headers(classifier: distilsent.Classifier) -> None:
    async def scenario(client: httpx.AsyncClient, state: Any) -> None:
        r = await client.post("/predict", json={"inputs": [["good film"], ["bad film"]]})
        assert r.status_code == 200
        assert r.headers["x-compute-type"] == "cpu"
        assert int(r.headers["x-compute-characters"]) == len("good film") + len("bad film")
        assert int(r.headers["x-compute-tokens"]) == sum(
            len(ids) for ids in classifier.tokenizer.encode(["good film", "bad film"])
        )
        times = {
            k: int(r.headers[f"x-{k}-time"])
            for k in ("compute", "total", "tokenization", "queue", "inference")
        }
        assert (
            times["compute"]
            == times["total"]
            >= max(times["tokenization"], times["queue"], times["inference"])
        )
        await client.post("/predict", json={"inputs": "good"})
        long = " ".join(["word"] * 600)
        r = await client.post("/predict", json={"inputs": long, "truncate": False})
        assert r.status_code == 422
        text = (await client.get("/metrics")).text
        assert 'te_request_count{method="batch"} 1.0' in text
        assert 'te_request_count{method="single"} 2.0' in text
        assert 'te_request_success{method="single"} 1.0' in text
        assert 'te_request_failure{err="validation"} 1.0' in text
        assert "te_request_duration_count 2.0" in text and "te_request_inference_duration_count 2.0" in text
        assert "te_request_queue_duration_bucket" in text and "te_request_tokenization_duration_sum" in text
        assert "te_batch_next_size_count" in text and "te_batch_next_tokens_count" in text
        assert "te_queue_size 0.0" in text

    run_app(scenario, classifier)


def test_concurrent_requests_share_model_calls(classifier: distilsent.Classifier) -> None:
    texts = [f"review number {i} was {'great' if i % 2 else 'bad'}" for i in range(50)]
    expected = [p.to_dict() for p in classifier.predict(texts)]

    async def scenario(client: httpx.AsyncClient, state: Any) -> None:
        responses = await asyncio.gather(*(client.post("/v1/classify", json={"inputs": t}) for t in texts))
        assert_close([r.json() for r in responses], expected)
        assert state.batcher.stats.sequences == 50
        assert state.batcher.stats.model_calls < 50
        assert max(state.batcher.stats.batch_sizes) > 1

    run_app(scenario, classifier, max_wait_ms=20)


def test_a_long_request_does_not_starve_short_ones() -> None:
    calls: list[int] = []

    def infer(batch: list[list[int]]) -> np.ndarray:
        calls.append(len(batch))
        time.sleep(0.01)
        return np.array([[float(seq[0]), 0.0] for seq in batch], dtype=np.float32)

    async def main() -> None:
        batcher = Batcher(infer, max_tokens=40, max_requests=8, max_wait_ms=0, max_pending=8)
        batcher.start()
        finished: list[str] = []

        async def submit(name: str, seqs: list[list[int]]) -> np.ndarray:
            out = await batcher.submit(seqs)
            finished.append(name)
            return out

        long_job = asyncio.create_task(submit("long", [[i, 1, 2, 3] for i in range(200)]))
        await asyncio.sleep(0.015)  # the long request's first model call is under way
        short = await submit("short", [[7, 1, 2, 3]])
        result = await long_job
        await batcher.stop()
        assert finished == ["short", "long"]
        np.testing.assert_array_equal(short[:, 0], [7])
        np.testing.assert_array_equal(result[:, 0], np.arange(200))  # order kept across calls
        assert max(calls) <= 10  # 40-token budget of 4-token sequences

    asyncio.run(main())


def test_missing_serve_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "distilsent.serve.app", raising=False)
    monkeypatch.setitem(sys.modules, "fastapi", None)
    with pytest.raises(distilsent.MissingExtraError, match=r"distilsent\[serve\]"):
        create_app()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(model: Path, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "distilsent", "serve", "--model", str(model), "--port", str(port), *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(proc.stdout.read().decode() if proc.stdout else "server exited")
        try:
            if httpx.get(url + "/ready", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("server did not become ready in 60 s")


@pytest.mark.slow
def test_inference_client_against_a_real_server(
    tiny_model_dir: Path, tiny_classifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import InferenceClient, constants

    # The suite runs hub-offline; this client talks to our loopback server, not the Hub.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    proc, url = _start_server(tiny_model_dir, "--api-key", "secret")
    try:
        result = InferenceClient(base_url=url, api_key="secret").text_classification(TEXTS[0])
        expected = tiny_classifier.predict(TEXTS[0])
        assert [(e.label, e.score) for e in result] == [
            (label, pytest.approx(score, abs=1e-5)) for label, score in expected.scores.items()
        ]
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=30)[0].decode()
    # uvicorn re-raises SIGTERM once shut down, so the exit status says "terminated", as systemd expects.
    assert proc.returncode in (0, -signal.SIGTERM), output
    assert "Finished server process" in output
    assert "secret" not in output


@pytest.mark.slow
def test_sigterm_lets_in_flight_requests_finish(ref_model_dir: Path) -> None:
    proc, url = _start_server(ref_model_dir)
    texts = [f"sentence {i} about a film that was rather good" for i in range(1000)]
    result: dict[str, Any] = {}

    def request() -> None:
        result["response"] = httpx.post(url + "/v1/classify", json={"inputs": texts}, timeout=120)

    worker = threading.Thread(target=request)
    worker.start()
    time.sleep(0.5)  # the request is being scored (1,000 texts take seconds on a CPU)
    proc.send_signal(signal.SIGTERM)
    worker.join(120)
    output = proc.communicate(timeout=60)[0].decode()
    response = result["response"]
    assert response.status_code == 200 and len(response.json()) == 1000
    assert proc.returncode in (0, -signal.SIGTERM), output
    assert "Finished server process" in output


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium not installed (.ci/run installs it)")
def test_web_page_in_a_real_browser(ref_model_dir: Path, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    proc, url = _start_server(ref_model_dir)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
            page = browser.new_page()
            page.goto(url + "/")
            page.wait_for_function("labels.length > 0")  # /info has answered
            # Did the spinner show while /v1/explain ran? Recorded as it happens, not polled.
            page.evaluate(
                """() => { window.spun = false; new MutationObserver(() => {
                     if (!document.getElementById('explaining').hidden) window.spun = true;
                   }).observe(document.getElementById('explaining'), {attributes: true}); }"""
            )
            # A negative review with a strong positive word: the word is coloured as pushing towards
            # POSITIVE, whatever the predicted label.
            text = "The cast is wonderful, but the plot is dull,  slow and far too long."
            page.fill("#text", text)
            page.click("#classify")
            page.wait_for_selector("#words span")
            assert page.inner_text("#label") == "NEGATIVE"
            assert page.evaluate("window.spun") and page.is_hidden("#explaining")
            assert page.text_content("#words") == text  # the original text, its spacing and commas

            def colour_of(word: str) -> tuple[str, tuple[int, int, int]]:
                span = page.locator("#words span", has_text=re.compile(f"^{word}$"))
                rgb = span.evaluate("e => getComputedStyle(e).backgroundColor")
                red, green, blue = (int(x) for x in re.findall(r"\d+", rgb)[:3])
                return span.get_attribute("data-towards"), (red, green, blue)

            towards, (red, green, _) = colour_of("wonderful")
            assert towards == "POSITIVE" and green > red
            towards, (red, green, _) = colour_of("dull")
            assert towards == "NEGATIVE" and red > green
            legend = page.inner_text("#legend")
            assert "pushes towards POSITIVE" in legend and "pushes towards NEGATIVE" in legend
            assert page.is_hidden("#truncated")
            shot = Path(os.environ.get("DISTILSENT_SCREENSHOT", tmp_path / "page.png"))
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 0
            # Past the model's 128 tokens: a notice, and the unread rest greyed out.
            long_text = "a quiet and lovely film about two sisters . " * 40
            page.fill("#text", long_text)
            page.click("#classify")
            page.wait_for_selector("#words .unread")
            assert "only the first 128 tokens were read" in page.inner_text("#truncated")
            assert page.text_content("#words") == long_text
            # An error replaces the old result instead of leaving it under the new text.
            page.route(
                "**/v1/classify",
                lambda route: route.fulfill(
                    status=503, content_type="application/json", body='{"error": "server busy"}'
                ),
            )
            page.fill("#text", "Hello, my dog is cute")
            page.click("#classify")
            page.wait_for_selector("#status.error")
            assert page.inner_text("#status") == "server busy"
            assert page.is_hidden("#result") and page.text_content("#words") == ""
            page.unroute("**/v1/classify")
            page.click("#classify")
            page.wait_for_selector("#words span")
            assert page.inner_text("#label") == "POSITIVE" and float(page.inner_text("#score")) > 0.9
            page.click("#tab-batch")
            page.fill("#lines", "a wonderful film\na dreadful, boring mess\n")
            page.click("#classify-batch")
            page.wait_for_selector("#table:not([hidden])")
            rows = page.locator("#table tbody tr")
            assert rows.count() == 2
            assert [rows.nth(i).locator("td").nth(2).inner_text() for i in range(2)] == [
                "POSITIVE",
                "NEGATIVE",
            ]
            browser.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def test_a_lone_surrogate_is_a_422_on_every_route(classifier: distilsent.Classifier) -> None:
    # JSON's "\ud800" escape decodes to a str the tokenizer cannot take; it used to be a 500.
    body = '"good \\ud800 film"'

    async def scenario(client: httpx.AsyncClient, state: Any) -> None:
        headers = {"content-type": "application/json"}
        for route in ("/v1/classify", "/predict", "/"):
            r = await client.post(route, content='{"inputs": ' + body + "}", headers=headers)
            assert_error(r, 422, "inputs: text is not valid UTF-8")
        r = await client.post("/v1/classify", content='{"inputs": ["fine", ' + body + "]}", headers=headers)
        assert_error(r, 422, "inputs[1]: text is not valid UTF-8")
        r = await client.post("/v1/classify", json={"inputs": "good film"})  # the server is still fine
        assert r.status_code == 200

    run_app(scenario, classifier)


def test_out_of_scope_texts_carry_a_warning_or_are_refused(classifier: distilsent.Classifier) -> None:
    async def scenario(client: httpx.AsyncClient, state: Any) -> None:
        r = await client.post("/v1/classify", json={"inputs": ["good film", "🎉🎉"]})
        assert r.status_code == 200
        assert [p.get("warning") for p in r.json()] == [None, "no known words"]
        r = await client.post("/v1/classify", json={"inputs": "🎉", "on_out_of_scope": "neutral"})
        assert r.json()["label"] == "NEUTRAL" and r.json()["warning"] == "no known words"
        r = await client.post("/v1/classify", json={"inputs": ["good", "🎉"], "on_out_of_scope": "error"})
        assert_error(r, 422, "texts[1] is out of scope (no known words)")
        r = await client.post("/v1/classify", json={"inputs": "good", "on_out_of_scope": "drop"})
        assert r.status_code == 422
        # TEI's answer has no place for a warning: its shape is unchanged.
        r = await client.post("/predict", json={"inputs": "🎉"})
        assert r.status_code == 200 and {x["label"] for x in r.json()} == {"NEGATIVE", "POSITIVE"}

    run_app(scenario, classifier)


def test_keys_are_checked_before_the_body_and_failures_are_throttled(
    classifier: distilsent.Classifier,
) -> None:
    async def scenario(client: httpx.AsyncClient, state: Any) -> None:
        # Neither a malformed nor an oversized body is looked at without a key.
        assert_error(await client.post("/v1/classify", content=b"{not json"), 401, "missing API key")
        assert_error(await client.post("/predict", content=b"x" * 5000), 401, "missing API key")
        good = {"Authorization": "Bearer k1"}
        assert (await client.post("/v1/classify", json={"inputs": "x"}, headers=good)).status_code == 200
        assert_error(await client.post("/v1/classify", content=b"{not json", headers=good), 422)
        for _ in range(8):  # with the two above: ten failures from this address
            bad = await client.post("/v1/classify", json={"inputs": "x"}, headers={"X-API-Key": "nope"})
            assert bad.status_code == 401
        throttled = await client.post("/v1/classify", json={"inputs": "x"}, headers=good)
        assert_error(throttled, 429, "too many requests without a valid API key")
        assert 1 <= int(throttled.headers["retry-after"]) <= 10
        assert (await client.get("/health")).status_code == 200  # open routes stay open
        spec = (await client.get("/openapi.json")).json()
        assert {"HTTPBearer", "APIKeyHeader"} <= set(spec["components"]["securitySchemes"])
        responses = spec["paths"]["/v1/classify"]["post"]["responses"]
        assert {"401", "413", "422", "429", "503"} <= set(responses)
        assert "ErrorBody" in spec["components"]["schemas"]

    run_app(scenario, classifier, api_keys=("k1",), max_body_bytes=1024)


def test_head_undecodable_bodies_and_invisible_texts(classifier: distilsent.Classifier) -> None:
    async def scenario(client: httpx.AsyncClient, state: Any) -> None:
        for path in ("/health", "/ready", "/info", "/metrics", "/"):
            response = await client.head(path)
            assert response.status_code == 200, (path, response.status_code)
        assert_error(await client.post("/v1/classify", content=b'{"inputs": "\xff\xfe"}'), 422, "not UTF-8")
        for text in ("\u0000", "\u200b\u200d", "\x00 \ufeff"):
            for route, body in (("/v1/classify", {"inputs": text}), ("/predict", {"inputs": [text]})):
                assert_error(await client.post(route, json=body), 422, "no visible characters")
        assert (await client.post("/v1/classify", json={"inputs": "\u200bgood"})).status_code == 200
        spec = (await client.get("/openapi.json")).json()
        assert "securitySchemes" not in spec.get("components", {})  # no keys, no scheme
        assert "401" not in spec["paths"]["/v1/classify"]["post"]["responses"]

    run_app(scenario, classifier)


def test_a_server_whose_model_cannot_load_exits(tmp_path: Path) -> None:
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "distilsent",
        "serve",
        "--model",
        str(tmp_path / "missing"),
        "--port",
        str(port),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "the model failed to load" in done.stderr and "--wait-for-model" in done.stderr


@pytest.mark.slow
def test_serve_workers_die_with_a_parent_killed_with_sigkill(tiny_model_dir: Path) -> None:
    import psutil

    proc, url = _start_server(tiny_model_dir, "--workers", "2")
    workers = psutil.Process(proc.pid).children(recursive=True)
    assert len(workers) >= 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, [p.pid for p in alive]
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/health", timeout=2)


def test_admission_bounds_the_queued_work_and_says_when_to_retry() -> None:
    def infer(batch: list[list[int]]) -> np.ndarray:
        time.sleep(sum(map(len, batch)) / 2000)  # 2,000 tokens/s
        return np.zeros((len(batch), 2), dtype=np.float32)

    async def main() -> None:
        batcher = Batcher(
            infer, max_tokens=200, max_requests=64, max_wait_ms=0, max_pending=1000, max_queue_seconds=0.5
        )
        batcher.start()
        await batcher.submit([[1] * 100])  # measures the rate
        assert batcher.tokens_per_second == pytest.approx(2000, rel=0.3)
        started = time.perf_counter()
        results = await asyncio.gather(
            *(batcher.submit([[1] * 100]) for _ in range(40)), return_exceptions=True
        )
        refused = [r for r in results if isinstance(r, QueueFullError)]
        admitted = [r for r in results if isinstance(r, np.ndarray)]
        assert len(admitted) + len(refused) == 40
        # 0.5 s of work at 2,000 tokens/s is 1,000 tokens: about ten requests of 100.
        assert 5 <= len(admitted) <= 14 and refused
        assert time.perf_counter() - started < 1.5
        assert all(r.retry_after >= 1 for r in refused)
        assert batcher.queued_tokens == 0
        await asyncio.sleep(max(r.retry_after for r in refused))  # the booked slots pass
        # Refused requests are told to come back spread out at the model's pace, not all in a second:
        # 190 of 100 tokens at 2,000 tokens/s is about 9.5 s of work.
        results = await asyncio.gather(
            *(batcher.submit([[1] * 100]) for _ in range(200)), return_exceptions=True
        )
        retries = [r.retry_after for r in results if isinstance(r, QueueFullError)]
        assert retries == sorted(retries) and retries[0] == 1
        assert 7 <= retries[-1] <= 14, retries
        assert max(retries.count(k) for k in set(retries)) <= 30  # about 20 per second of work
        await batcher.stop()

    asyncio.run(main())


def test_a_request_past_its_deadline_is_dropped_with_an_error() -> None:
    calls: list[int] = []

    def infer(batch: list[list[int]]) -> np.ndarray:
        calls.append(len(batch))
        time.sleep(0.3)
        return np.zeros((len(batch), 2), dtype=np.float32)

    async def main() -> None:
        batcher = Batcher(
            infer, max_tokens=4, max_requests=64, max_wait_ms=0, max_pending=100, deadline_seconds=0.5
        )
        batcher.start()
        with pytest.raises(DeadlineError, match=r"within 0\.5 s"):
            await batcher.submit([[1, 2, 3, 4]] * 10)  # ten calls of 0.3 s: cannot make it
        await asyncio.sleep(0.4)
        assert len(calls) <= 3  # the rest of its work was dropped
        assert batcher.queued_tokens == 0 and batcher.pending == 0
        await batcher.stop()

    asyncio.run(main())


@pytest.mark.slow
def test_requests_cut_by_the_graceful_timeout_get_a_json_503(ref_model_dir: Path) -> None:
    proc, url = _start_server(ref_model_dir, "--graceful-timeout", "2", "--max-inputs", "10000")
    texts = [f"sentence {i} about a film that was rather good" for i in range(6000)]  # ~15 s of work
    result: dict[str, Any] = {}

    def request() -> None:
        result["response"] = httpx.post(url + "/v1/classify", json={"inputs": texts}, timeout=120)

    worker = threading.Thread(target=request)
    worker.start()
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    worker.join(60)
    output = proc.communicate(timeout=60)[0].decode()
    response = result["response"]
    body = assert_error(response, 503, "shutting down")
    assert body["error_type"] == "unavailable" and "retry-after" in response.headers
    assert proc.returncode in (0, -signal.SIGTERM), output


def test_a_failing_model_is_424_on_predict_as_in_tei_and_500_elsewhere(
    classifier: distilsent.Classifier,
) -> None:
    original = classifier.run

    def broken(batch: list[list[int]]) -> np.ndarray:
        raise RuntimeError("kernel exploded")

    async def scenario(client: httpx.AsyncClient, state: Any) -> None:
        classifier.run = broken  # type: ignore[method-assign]
        body = assert_error(await client.post("/predict", json={"inputs": "x"}), 424, "model failed")
        assert body["error_type"] == "backend" and "exploded" not in body["error"]  # no internals
        assert_error(await client.post("/v1/classify", json={"inputs": "x"}), 500, "model failed")
        classifier.run = original  # type: ignore[method-assign]
        assert (await client.post("/predict", json={"inputs": "x"})).status_code == 200

    run_app(scenario, classifier)


def test_a_batch_mixing_texts_and_pairs_keeps_each_ones_options(
    classifier: distilsent.Classifier, tiny_model_dir: Path
) -> None:
    long_text = "the start is great " + "filler " * 300 + "the end is awful"
    tail = distilsent.load(tiny_model_dir, device="cpu", truncation_side="tail").predict(long_text)
    pair = classifier.predict(("a wonderful film", "dull and far too long"))

    async def scenario(client: httpx.AsyncClient, state: Any) -> None:
        body = {
            "inputs": [["a wonderful film", "dull and far too long"], [long_text]],
            "truncation_direction": "Left",
        }
        rows = (await client.post("/predict", json=body)).json()
        assert [{e["label"]: e["score"] for e in row} for row in rows] == [
            approx_scores(pair.scores),
            approx_scores(tail.scores),  # the text beside a pair keeps its end, as asked
        ]
        refused = await client.post("/predict", json={"inputs": [["a", "b"], [long_text]], "truncate": False})
        assert_error(refused, 422, "inputs[1] is longer")  # its own index in the batch

    run_app(scenario, classifier)
