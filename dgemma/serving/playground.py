"""The web playground: the page at `/` (one static file, no CDN, no build step) and the Sudoku endpoint it uses.

The page talks to the server only through the public HTTP API (`/v1/models`, `/v1/completions` with `drafts`,
`/tokenize`, `/v1/sudoku`), so it doubles as an example client. `/v1/sudoku` is a dgemma extension: the bundled
Sudoku model (its own private vocabulary, 3.5M parameters, loaded on first use) solves a grid through the same
engine step as every other request, streaming the argmax grid after each denoising step."""

from __future__ import annotations

import asyncio
import json
import threading
from importlib.resources import files

from fastapi import FastAPI
from fastapi import Request as HttpRequest
from fastapi.responses import HTMLResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from .middleware import until_disconnected
from .schemas import SEED_RANGE, APIError, documented, error_body


class SudokuRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    puzzle: str = Field(description="81 cells, row by row: digits 1-9, and 0 or . for a blank")
    seed: int = Field(0, **SEED_RANGE)
    stream: bool = False


class SudokuAnswer(BaseModel):
    solution: str
    valid: bool
    tokens_per_forward: float


class _Cancelled(Exception):
    pass


class SudokuSolver:
    """The bundled Sudoku model, loaded on first use; one solve at a time (it is small, and the batcher's thread
    is what serves everything else)."""

    def __init__(self):
        self.model, self.lock = None, threading.Lock()

    def solve(self, cells: list[int], seed: int, on_grid, cancelled) -> dict:
        from ..tasks import sudoku as S
        from ..tasks.sudoku_decoding import load_model, solve_batch
        with self.lock:
            if self.model is None:
                self.model = load_model(None)

            def step(event):
                if cancelled():
                    raise _Cancelled
                on_grid({"step": event.step, "grid": S.to_string(S.decode_solution(event.draft[0].tolist()))})
            answers, tpf = solve_batch(self.model, [cells], "diffusion", seed=seed, on_step=step)
        return {"solution": S.to_string(answers[0]), "valid": S.is_valid_solution(answers[0], cells),
                "tokens_per_forward": tpf[0]}


def add_routes(app: FastAPI) -> None:
    page = files(__package__).joinpath("static", "index.html").read_text(encoding="utf-8")
    solver = SudokuSolver()

    @app.get("/", include_in_schema=False)
    async def index():
        return HTMLResponse(page)

    @app.post("/v1/sudoku", responses=documented(SudokuAnswer, 400, 401, 413, stream=True))
    async def sudoku(body: SudokuRequest, http: HttpRequest):
        from ..tasks import sudoku as S
        try:
            cells = S.parse_puzzle(body.puzzle)
        except S.SudokuError as e:
            raise APIError(400, str(e), param="puzzle", code="invalid_puzzle") from None
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        gone = threading.Event()

        def work():
            try:
                result = solver.solve(cells, body.seed, lambda g: loop.call_soon_threadsafe(queue.put_nowait, g),
                                      gone.is_set)
                loop.call_soon_threadsafe(queue.put_nowait, {"done": result})
            except _Cancelled:
                pass
            except Exception as e:  # noqa: BLE001 - reported to the client, never kills the server
                loop.call_soon_threadsafe(queue.put_nowait, {"error": f"{type(e).__name__}: {e}"})
        worker = loop.run_in_executor(None, work)

        async def hang_up():
            await until_disconnected(http)
            queue.put_nowait({"gone": True})

        async def events():
            """The worker's grids, then its result; a client that goes away stops the solve at the next step."""
            watcher = asyncio.ensure_future(hang_up())
            try:
                while True:
                    item = await queue.get()
                    if "gone" in item:
                        return
                    yield item
                    if "done" in item or "error" in item:
                        return
            finally:
                watcher.cancel()
                gone.set()

        if body.stream:
            async def sse():
                async for item in events():
                    if "error" in item:
                        item = error_body(item["error"], "server_error", None, None)
                    yield f"data: {json.dumps(item.get('done', item))}\n\n"
                yield "data: [DONE]\n\n"
            return StreamingResponse(sse(), media_type="text/event-stream")
        async for item in events():
            if "error" in item:
                raise APIError(500, item["error"], "server_error")
            if "done" in item:
                await worker
                return item["done"]
        raise APIError(499, "client disconnected")
