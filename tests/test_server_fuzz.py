"""Property-based fuzzing of `dgemma serve` with schemathesis, from the server's own OpenAPI document: every
documented operation gets generated requests, valid and invalid, against a real server process. No 5xx, every
response as documented (status, content type, body schema), and every error in the OpenAI envelope; oversized
and deeply nested bodies are refused quickly."""

from __future__ import annotations

import time

import pytest

schemathesis = pytest.importorskip("schemathesis")
httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from hypothesis import HealthCheck, settings  # noqa: E402

from dgemma.serving.middleware import MAX_BODY_BYTES, MAX_JSON_DEPTH  # noqa: E402
from tests.test_server import start, stop, tiny_checkpoint  # noqa: E402

NAME = "fuzz"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A tiny random model with a 16-token canvas and a 128-token context, so that any request the fuzzer makes
    is cheap; past 2 s a request ends with a 408 (a generated request may ask for 1024 steps a canvas)."""
    path = tiny_checkpoint(tmp_path_factory.mktemp("ckpt"), NAME, 16, 128)
    proc, url, _ = start(path, "--request-timeout", "2", "--max-batch", "4")
    yield url
    stop(proc)


@pytest.fixture(scope="module")
def api(server):
    return schemathesis.openapi.from_url(server + "/openapi.json")


def envelope(ctx, response, case):
    """Every 4xx is an OpenAI error, {"error": {"message", "type", "param", "code"}}, with a message."""
    if 400 <= response.status_code < 500:
        error = response.json().get("error")
        assert isinstance(error, dict) and set(error) == {"message", "type", "param", "code"}, response.text
        assert error["message"], response.text


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_every_operation(api, mode):
    """Schema-valid requests (positive) and invalid ones (negative), for every documented operation. Schemathesis's
    positive_data_acceptance check is left out: a schema-valid request may still be refused, for naming another
    model or asking for more than the context holds."""
    from hypothesis import given
    failures = []
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 10
    if mode == "negative":  # a GET here has no input that could be invalid (any model id is a valid string)
        operations = [op for op in operations if op.method.upper() == "POST"]
        assert len(operations) >= 6
    for operation in operations:
        @given(case=operation.as_strategy(schemathesis.GenerationMode(mode)))
        @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            case.call_and_validate(excluded_checks=[schemathesis.checks.positive_data_acceptance],
                                   additional_checks=[envelope], timeout=30)
        try:
            check()
        except Exception as e:  # noqa: BLE001 - every operation is tried; the failures are reported together
            failures.append(f"{operation.label}: {e}")
    assert not failures, "\n\n".join(failures)


def test_oversized_and_deeply_nested_bodies_are_refused_quickly(server):
    t = time.monotonic()
    big = httpx.post(server + "/v1/completions", content=b"x" * (MAX_BODY_BYTES + 1),
                     headers={"content-type": "application/json"}, timeout=30)
    assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"
    deep = httpx.post(server + "/tokenize", content=b"[" * 200_000 + b"]" * 200_000,
                      headers={"content-type": "application/json"}, timeout=30)
    assert deep.status_code == 400 and deep.json()["error"]["code"] == "json_too_deep"
    nested_ok = {"content": "x", "add_special": False}
    for _ in range(MAX_JSON_DEPTH - 2):  # as deep as allowed: parsed, then refused field by field
        nested_ok = {"content": nested_ok}
    allowed = httpx.post(server + "/tokenize", json=nested_ok, timeout=30)
    assert allowed.status_code == 400 and allowed.json()["error"]["param"] == "content"
    brackets_in_text = httpx.post(server + "/tokenize", json={"content": "[" * 10_000}, timeout=30)
    assert brackets_in_text.status_code == 200  # brackets inside strings do not nest
    assert time.monotonic() - t < 20
    assert httpx.get(server + "/health").status_code == 200


@pytest.mark.parametrize("path,body,param", [
    ("/v1/completions", {"prompt": "x", "seed": 2**70}, "seed"),  # was a 500: torch's seed overflowed
    ("/v1/sudoku", {"puzzle": "0" * 81, "seed": -2**70}, "seed"),
    ("/detokenize", {"tokens": [False]}, "tokens.0"),  # was accepted as token 0
    ("/v1/completions", {"prompt": "x", "max_tokens": "4"}, "max_tokens"),
    ("/v1/chat/completions", {"messages": [{"role": "assistant", "tool_calls": [{"function": 3}]}]},
     "messages.0.tool_calls.0.function"),  # was a 500
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}],
                              "chat_template_kwargs": {"enable_thinking": "no"}}, "chat_template_kwargs.enable_thinking"),
])
def test_what_fuzzing_found_is_a_400_naming_the_parameter(server, path, body, param):
    body = {"model": NAME, **body} if path.startswith("/v1/c") else body
    r = httpx.post(server + path, json=body, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
