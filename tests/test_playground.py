"""The web playground (GET /) in real headless Chromium (Debian's, driven by Playwright), against a real server
process on the bundled code model: generate shows several drafts and ends with the API's own answer, infill keeps
the suffix byte for byte, JSON mode gives schema-valid JSON (and one object without a schema), edit keeps the lines around the selection, Sudoku fills a valid grid, stop cancels the
request (the server's cancelled counter rises), an API error is displayed, and the page fits a narrow window.

Screenshots of each mode, from these same tests, go to docs/ when asked for:
    DGEMMA_SCREENSHOTS=1 python -m pytest tests/test_playground.py -n 0
"""
import os
import shutil
import time
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import sync_playwright

import dgemma
from dgemma.tasks import sudoku as S

from .test_server import metric, start, stop

BUNDLED = Path(dgemma.__file__).parent / "assets" / "code"
DOCS = Path(__file__).resolve().parent.parent / "docs"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PUZZLE = "530070000600195000098000060800060003400803001700020006060000280000419005000080079"


@pytest.fixture(scope="module")
def server():
    proc, url, _ = start(BUNDLED, "--max-batch", "4")
    yield url
    stop(proc)


@pytest.fixture(scope="module")
def browser():
    assert CHROMIUM, "Chromium is not installed (Debian: apt-get install chromium); .ci/run installs it"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server + "/")
    page.wait_for_selector("#model:has-text('model: code')")
    yield page
    page.close()
    assert errors == []  # no uncaught script errors in any test


def screenshot(page, name):
    if os.environ.get("DGEMMA_SCREENSHOTS"):
        page.screenshot(path=str(DOCS / f"playground-{name}.png"))


def finish(page, timeout=120_000):
    """Wait for the run a click or a key started (it disables Run at once) to end."""
    page.wait_for_function("() => !document.getElementById('run').disabled", timeout=timeout)


def api_text(server, **body):
    r = httpx.post(server + "/v1/completions", json={"model": "code", **body}, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["text"]


def test_the_page_is_one_offline_file(server):
    r = httpx.get(server + "/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    for external in ('src="http', "src='http", 'href="http', "@import", "url(http"):
        assert external not in html  # nothing from a CDN: the page works offline


def test_generate_shows_drafts_and_ends_with_the_api_answer(page, server):
    page.evaluate("""() => { window.drafts = [];
        new MutationObserver(() => window.drafts.push(document.getElementById('canvas').textContent))
          .observe(document.getElementById('canvas'), {childList: true, subtree: true}); }""")
    prompt = "def fibonacci(n):"
    page.fill("#prompt", prompt)
    page.fill("#seed", "3")
    page.fill("#max", "48")
    page.fill("#steps", "12")
    page.focus("#prompt")
    page.keyboard.press("Control+Enter")  # the keyboard runs it, as the button does
    finish(page)
    final = page.text_content("#canvas")
    assert len(set(page.evaluate("window.drafts"))) >= 2
    assert page.locator("#canvas span[title^='accepted at step']").count() == 0  # drafts gone, only text left
    assert final == prompt + api_text(server, prompt=prompt, max_tokens=48, seed=3, denoising_steps=12)
    assert page.text_content("#s-steps") != "steps 0" and "tokens per forward" in page.text_content("#s-tpf")
    screenshot(page, "generate")


def test_infill_keeps_the_suffix_byte_for_byte(page, server):
    page.click("#tab-infill")
    prefix, suffix = "def reverse(text):", "\n\n\nassert reverse('hello') == 'olleh'\n  # tail  \n"
    page.fill("#prefix", prefix)
    page.fill("#suffix", suffix)
    page.fill("#max", "24")
    page.fill("#seed", "1")
    page.click("#run")
    finish(page)
    final = page.text_content("#canvas")
    assert final.startswith(prefix) and final.endswith(suffix)
    gap = api_text(server, prompt=prefix, suffix=suffix, max_tokens=24, seed=1)
    assert final == prefix + gap + suffix
    screenshot(page, "infill")


def test_json_mode_gives_schema_valid_json_or_one_object(page, server):
    """With the page's example schema: the output is valid against it and is the API's answer for the same seed;
    with the schema box empty: one JSON object (json_object); a schema that is not JSON is shown as an error."""
    import json

    from dgemma.json_schema import validate
    page.click("#tab-json")
    page.fill("#seed", "2")
    page.fill("#steps", "12")
    schema = json.loads(page.input_value("#schema"))
    page.click("#run")
    finish(page)
    prompt = page.input_value("#json-prompt")
    text = page.text_content("#canvas")[len(prompt):]
    assert validate(json.loads(text), schema) == [] and page.text_content("#s-state") == "valid JSON"
    fmt = {"type": "json_schema", "json_schema": {"name": "schema", "schema": schema}}
    assert text == api_text(server, prompt=prompt, seed=2, denoising_steps=12, response_format=fmt)
    screenshot(page, "json")
    page.fill("#schema", "")
    page.fill("#max", "24")
    page.click("#run")
    finish(page)
    assert isinstance(json.loads(page.text_content("#canvas")[len(prompt):]), dict)
    page.fill("#schema", "{not json")
    page.click("#run")
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    assert "the schema is not JSON" in page.text_content("#error")


def test_edit_regenerates_only_the_selected_lines(page):
    page.click("#tab-edit")
    lines = ["def average(nums):", "    total = 0", "    for x in nums:", "        total += x",
             "    return total / len(nums)", ""]
    page.fill("#source", "\n".join(lines))
    page.fill("#from", "2")
    page.fill("#to", "3")
    page.click("#run")
    finish(page)
    new = page.input_value("#source").split("\n")
    assert new[0] == lines[0] and new[-3:] == lines[-3:]
    assert page.is_hidden("#error")
    screenshot(page, "edit")


def test_sudoku_fills_a_valid_grid_with_the_givens_marked(page):
    page.click("#tab-sudoku")
    page.fill("#puzzle", PUZZLE)
    page.click("#run")
    finish(page)
    values = page.eval_on_selector_all("#grid input", "cs => cs.map(c => c.value)")
    given = page.eval_on_selector_all("#grid input", "cs => cs.map(c => c.classList.contains('given'))")
    assert given == [ch != "0" for ch in PUZZLE]
    assert S.is_valid_solution([int(v or 0) for v in values], S.parse_grid(PUZZLE))
    assert page.text_content("#s-state") == "valid solution"
    screenshot(page, "sudoku")


def test_stop_cancels_the_request_on_the_server(page, server):
    before = metric(server, "dgemma_requests_cancelled_total")
    page.fill("#max", "256")
    page.fill("#steps", "200")
    page.fill("#temp", "2")  # hot samples: the canvas stays noisy and runs its 200 steps
    page.fill("#prompt", "import os")
    page.click("#run")
    page.wait_for_function("() => document.getElementById('s-steps').textContent !== 'steps 0'", timeout=60_000)
    page.keyboard.press("Escape")
    page.wait_for_function("() => document.getElementById('s-state').textContent === 'stopped'", timeout=10_000)
    deadline = time.time() + 20
    while time.time() < deadline and metric(server, "dgemma_requests_cancelled_total") <= before:
        time.sleep(0.1)
    assert metric(server, "dgemma_requests_cancelled_total") == before + 1
    assert page.is_hidden("#error")


def test_an_api_error_is_shown_as_a_message(page):
    page.fill("#max", "100000")
    page.click("#run")
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    assert "max_tokens" in page.text_content("#error") or "context" in page.text_content("#error")
    page.click("#tab-sudoku")
    page.fill("#puzzle", "55" + "0" * 79)  # two 5s in one row
    page.click("#run")
    page.wait_for_function("() => document.getElementById('error').textContent.includes('5')", timeout=30_000)


def test_narrow_window_and_dark_theme(browser, server):
    page = browser.new_page(viewport={"width": 420, "height": 800}, color_scheme="dark")
    page.goto(server + "/")
    page.wait_for_selector("#model:has-text('model: code')")
    assert page.evaluate("document.documentElement.classList.contains('dark')")
    assert page.evaluate("document.scrollingElement.scrollWidth") <= 420  # nothing wider than the window
    page.keyboard.press("Tab")
    page.focus("#tab-generate")
    page.keyboard.press("ArrowRight")  # tabs move with the arrow keys
    assert page.get_attribute("#tab-infill", "aria-selected") == "true"
    page.click("#theme")
    assert not page.evaluate("document.documentElement.classList.contains('dark')")
    page.click("#theme")
    screenshot(page, "narrow-dark")
    page.close()


def test_sudoku_endpoint_answers_and_refuses_bad_grids(server):
    r = httpx.post(server + "/v1/sudoku", json={"puzzle": PUZZLE, "seed": 0}, timeout=120)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["valid"] is S.is_valid_solution(S.parse_grid(body["solution"]), S.parse_grid(PUZZLE))
    assert body["tokens_per_forward"] > 1
    for puzzle, message in (("12", "expected 81 cells, found 2"), ("x" * 81, "invalid character 'x'"),
                            ("55" + "0" * 79, "5"), ("123456780" + "0" * 71 + "9", "no solution")):
        r = httpx.post(server + "/v1/sudoku", json={"puzzle": puzzle}, timeout=60)
        err = r.json()["error"]
        assert r.status_code == 400 and err["param"] == "puzzle" and message in err["message"], r.text
    r = httpx.post(server + "/v1/sudoku", json={"puzzle": PUZZLE, "steps": 3}, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["param"] == "steps"  # unknown fields are refused


@pytest.mark.parametrize("stream", [True, False])
def test_a_sudoku_solve_stops_when_its_client_disconnects(monkeypatch, stream):
    """The route learns of the disconnect from the ASGI channel itself and the solve's next step sees it
    (a solver that would run 5 s is stopped within 2)."""
    import asyncio
    import json
    import threading

    from fastapi import FastAPI

    from dgemma.serving import playground

    stopped = threading.Event()

    class SlowSolver:
        def solve(self, cells, seed, on_grid, cancelled):
            for step in range(500):
                if cancelled():
                    stopped.set()
                    raise playground._Cancelled
                on_grid({"step": step, "grid": PUZZLE})
                time.sleep(0.01)
            return {"solution": PUZZLE, "valid": False, "tokens_per_forward": 1.0}

    monkeypatch.setattr(playground, "SudokuSolver", SlowSolver)
    app = FastAPI()
    playground.add_routes(app)
    body = json.dumps({"puzzle": PUZZLE, "stream": stream}).encode()
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        if messages:
            return messages.pop(0)
        await asyncio.sleep(0.2)  # the client reads a little, then goes away
        return {"type": "http.disconnect"}

    async def send(message):
        pass

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "path": "/v1/sudoku", "raw_path": b"/v1/sudoku", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/json")], "client": ("t", 1), "server": ("t", 80)}

    async def call():
        try:
            await asyncio.wait_for(app(scope, receive, send), 2)
        except playground.APIError as e:  # not streamed: the route's 499 (this bare app has no error handler)
            assert e.status == 499

    start_t = time.monotonic()
    # in a thread of its own: Playwright's sync API keeps an event loop running in this one
    runner = threading.Thread(target=asyncio.run, args=(call(),))
    runner.start()
    runner.join()
    assert stopped.wait(2 - (time.monotonic() - start_t) + 0.5)
