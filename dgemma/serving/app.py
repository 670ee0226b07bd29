"""The HTTP side: an OpenAI-compatible FastAPI app over a `BatchEngine` (see docs/serving.md)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
import time
import uuid
from pathlib import Path

from fastapi import FastAPI
from fastapi import Request as HttpRequest
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..chat_format import parse_reply
from ..engine import GenerationConfig
from . import chat as chat_io
from .batcher import BatchEngine, EngineDeadError, QueueFullError, Request, SamplingParams
from .middleware import GuardMiddleware, until_disconnected
from .playground import add_routes as add_playground
from .repair import json_object_events
from .schemas import (JSON_OBJECT, APIError, ChatRequest, ChatResponse, CompletionRequest, CompletionResponse,
                      DetokenizeRequest, DetokenizeResponse, Health, InfillRequest, InfillResponse, ModelCard,
                      ModelList, TokenizeRequest, TokenizeResponse, documented, error_body, stops_of,
                      structured_output)
from .sse import collect, sse, stream_openai, usage

log = logging.getLogger("dgemma.serving")


# --- server state ------------------------------------------------------------------------------------------------
class ServerState:
    def __init__(self, model_dir: str, model_name: str | None = None, max_batch: int = 8, max_queue: int = 64,
                 context_length: int | None = None, lock_after: int = 2, api_key: str | None = None,
                 prefix_cache: int = 4,
                 dtype: str = "float32", startup_delay: float = 0.0, device: str | None = None,
                 compile: bool = False, request_timeout: float | None = None, exit_on_load_error: bool = False,
                 quantize: str | None = None, group_size: int | None = None,
                 image_dir: str | None = None):
        self.model_dir, self.api_key, self.request_timeout = model_dir, api_key, request_timeout
        self.exit_on_load_error = exit_on_load_error
        self.image_dir = Path(image_dir) if image_dir else None  # where image_url parts may name local files
        self.draining = False  # SIGTERM: no new requests; running ones finish (see dgemma.serving.run)
        self.active: set = set()  # the HTTP side's requests in the engine, for cancelling them at shutdown
        self.model_name = model_name or Path(model_dir).name or str(model_dir)
        self.kw = dict(max_batch=max_batch, max_queue=max_queue, context_length=context_length,
                       lock_after=lock_after, compile=compile, prefix_cache=prefix_cache)
        self.dtype, self.startup_delay, self.device, self.quantize = dtype, startup_delay, device, quantize
        self.group_size = group_size
        self.status, self.load_error = "loading", None
        self.engine: BatchEngine | None = None
        self.tokenizer = None
        self.created = int(time.time())
        self.http = {"completions": 0, "chat": 0, "infill": 0, "errors": 0}

    def load(self):
        try:
            if self.startup_delay:
                time.sleep(self.startup_delay)
            import torch

            from ..model import DiffusionGemma
            from ..tokenizer import Tokenizer, default_tokenizer_path
            torch.set_grad_enabled(False)
            path = Path(self.model_dir)
            device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
            model = DiffusionGemma.from_pretrained(self.model_dir, dtype=getattr(torch, self.dtype), device=device,
                                                   quantize=self.quantize, group_size=self.group_size)
            self.tokenizer = (Tokenizer.from_dir(path) if (path / "tokenizer.json").is_file()
                              else Tokenizer.from_file(default_tokenizer_path()))
            if self.tokenizer.vocab_size > model.config.vocab_size:
                raise ValueError(f"{path}: tokenizer has {self.tokenizer.vocab_size} tokens but the model only "
                                 f"{model.config.vocab_size}")
            self.defaults = dict(model.generation_defaults)
            self.engine = BatchEngine(model, **self.kw).start()
            self.status = "ok"
            log.warning("dgemma serve: model %s ready (context %d, batch %d)", self.model_name,
                        self.engine.context_length, self.engine.max_batch)
        except BaseException as e:  # noqa: BLE001
            log.exception("loading failed")
            self.status, self.load_error = "error", f"{type(e).__name__}: {e}"
            if self.exit_on_load_error:  # a supervisor restarts or reports it; nothing is served meanwhile
                print(f"dgemma serve: error: {e}", file=sys.stderr, flush=True)
                os._exit(3)

    def ready(self) -> BatchEngine:
        if self.draining:
            raise APIError(503, "the server is shutting down", "server_error", code="server_draining",
                           headers={"Retry-After": "5"})
        if self.status == "loading":
            raise APIError(503, "the model is still loading", "server_error", code="model_loading")
        if self.status != "ok" or not self.engine.alive:
            raise APIError(503, f"the engine is not running: {self.load_error or self.engine.error}", "server_error",
                           code="engine_dead")
        return self.engine

    def cancel_all(self, message: str) -> None:
        """End every request still running with a final error event (after the drain timeout)."""
        for req in list(self.active):
            req.emit("shutdown", message)
            self.engine.cancel(req)


def _param_of(loc) -> str | None:
    parts = [str(p) or '""' for p in loc if p not in ("body", "query", "path")]  # a key may be empty
    # pydantic unions add the member type to the location; keep the field path only
    parts = [p for p in parts if not (p[0].islower() and "[" in p) and p not in ("str", "int", "list[str]",
                                                                                  "list[int]")]
    return ".".join(parts) or None


def create_app(state: ServerState) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app):
        """The model loads in a thread, so /health answers `loading` at once; the engine stops on shutdown."""
        threading.Thread(target=state.load, name="dgemma-load", daemon=True).start()
        yield
        if state.engine:
            state.engine.shutdown()

    app = FastAPI(title="dgemma", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.dgemma = state

    @app.exception_handler(APIError)
    async def _api_error(request, exc: APIError):
        state.http["errors"] += 1
        return JSONResponse(error_body(exc.message, exc.type, exc.param, exc.code), status_code=exc.status,
                            headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request, exc: RequestValidationError):
        state.http["errors"] += 1
        err = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        param = _param_of(err.get("loc", ()))
        msg = err.get("msg", "invalid request")
        if err.get("type") == "extra_forbidden":
            msg = f"unsupported parameter: {param}"
        elif err.get("type") == "missing":
            msg = f"missing required parameter: {param}"
        elif err.get("type") == "json_invalid":
            param, msg = None, f"request body is not valid JSON: {msg}"
        else:
            msg = f"invalid value for {param}: {msg}" if param else msg
        return JSONResponse(error_body(msg, "invalid_request_error", param, err.get("type")), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc: StarletteHTTPException):
        return JSONResponse(error_body(str(exc.detail), "invalid_request_error", None, None),
                            status_code=exc.status_code)

    app.add_middleware(GuardMiddleware, state=state)

    # --- simple endpoints ---------------------------------------------------------------------------------------
    @app.get("/health", responses={200: {"model": Health}, 503: {"model": Health}})
    async def health():
        if state.draining:
            return JSONResponse({"status": "draining"}, status_code=503, headers={"Retry-After": "5"})
        if state.status == "loading":
            return JSONResponse({"status": "loading"}, status_code=503)
        if state.status != "ok" or not state.engine.alive:
            return JSONResponse({"status": "error", "error": state.load_error or repr(state.engine.error)},
                                status_code=503)
        running, waiting = state.engine.counts()
        return {"status": "ok", "running": running, "waiting": waiting}

    def model_card():
        eng = state.ready()
        return {"id": state.model_name, "object": "model", "created": state.created, "owned_by": "dgemma",
                "context_length": eng.context_length, "max_model_len": eng.context_length,
                "canvas_length": eng.L}

    @app.get("/v1/models", responses=documented(ModelList, 401, 503))
    async def models():
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}", responses=documented(ModelCard, 401, 404, 503))
    async def one_model(model_id: str):
        card = model_card()
        if model_id != state.model_name:
            raise APIError(404, f"The model '{model_id}' does not exist", param="model", code="model_not_found")
        return card

    @app.post("/tokenize", responses=documented(TokenizeResponse, 400, 413, 503))
    async def tokenize(body: TokenizeRequest):
        state.ready()
        ids = state.tokenizer.encode(body.content, add_bos=body.add_special)
        if body.with_pieces:
            return {"tokens": [{"id": i, "piece": state.tokenizer.decode([i], skip_special=False)} for i in ids]}
        return {"tokens": ids}

    @app.post("/detokenize", responses=documented(DetokenizeResponse, 400, 413, 503))
    async def detokenize(body: DetokenizeRequest):
        eng = state.ready()
        bad = [t for t in body.tokens if not 0 <= t < eng.V]
        if bad:
            raise APIError(400, f"token ids outside the vocabulary [0, {eng.V}): {bad[:5]}", param="tokens")
        return {"content": state.tokenizer.decode(body.tokens, skip_special=False)}

    @app.get("/metrics", responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
    async def metrics():
        return PlainTextResponse(render_metrics(state), media_type="text/plain; version=0.0.4")

    if os.environ.get("DGEMMA_SERVE_TEST_HOOKS") == "1":
        @app.post("/debug/kill-engine", include_in_schema=False)
        async def kill_engine():
            eng = state.ready()

            def boom(*a, **k):
                raise RuntimeError("killed by /debug/kill-engine")
            eng._step = boom
            eng._admit = boom
            eng.wake.set()
            for _ in range(100):
                if not eng.alive:
                    break
                await asyncio.sleep(0.02)
            return {"alive": eng.alive}

    # --- generation ---------------------------------------------------------------------------------------------
    def check_model(name: str):
        if name != state.model_name:
            raise APIError(404, f"The model '{name}' does not exist", param="model", code="model_not_found")

    def reject_unsupported(body):
        checks = [("n", body.n not in (None, 1), "only n=1 is supported"),
                  ("logit_bias", bool(body.logit_bias), "logit_bias is not supported"),
                  ("presence_penalty", bool(body.presence_penalty), "presence_penalty is not supported"),
                  ("frequency_penalty", bool(body.frequency_penalty), "frequency_penalty is not supported"),
                  ("stream_options", body.stream_options is not None and not body.stream,
                   "stream_options is only allowed with stream=true")]
        if isinstance(body, CompletionRequest):
            checks += [("echo", body.echo, "echo is not supported"),
                       ("logprobs", body.logprobs is not None, "logprobs is not supported"),
                       ("best_of", body.best_of not in (None, 1), "best_of is not supported")]
        else:
            checks += [("logprobs", bool(body.logprobs), "logprobs is not supported"),
                       ("top_logprobs", body.top_logprobs is not None, "top_logprobs is not supported")]
        for param, bad, msg in checks:
            if bad:
                raise APIError(400, msg, param=param, code="unsupported_parameter")

    def make_params(body, max_tokens: int, prompt_len: int, eng: BatchEngine, temperature=None) -> SamplingParams:
        if prompt_len + max_tokens > eng.context_length:
            raise APIError(400, f"This model's maximum context length is {eng.context_length} tokens. However, you "
                                f"requested {prompt_len + max_tokens} tokens ({prompt_len} in the prompt, "
                                f"{max_tokens} in the completion). Please reduce the prompt or max_tokens.",
                           param="max_tokens" if prompt_len < eng.context_length else "prompt",
                           code="context_length_exceeded")
        temp = body.temperature if temperature is None else temperature
        gen = GenerationConfig.from_checkpoint(
            state.defaults, getattr(body, "sampler", None), getattr(body, "entropy_bound", None),
            getattr(body, "confidence_tau", None), max_new_tokens=max_tokens,
            max_denoising_steps=getattr(body, "denoising_steps", None), t_min=getattr(body, "t_min", None),
            t_max=getattr(body, "t_max", None), temperature=None if temp is None else max(temp, 1e-4),  # 0: greedy
            top_k=body.top_k if body.top_k and body.top_k > 0 else None, top_p=body.top_p,
            eos_token_id=tuple(state.tokenizer.stop_ids) or (1,))
        if gen.t_min > gen.t_max:  # the request's, else the checkpoint's
            raise APIError(400, f"t_min ({gen.t_min}) must not exceed t_max ({gen.t_max})", param="t_min")
        return SamplingParams(gen, seed=body.seed, drafts=bool(getattr(body, "drafts", False)))

    def run(http: HttpRequest, prompt: list[int], params: SamplingParams, stops: list[str],
            suffix: list[int] | None = None, raw: bool = False, timeout: float | None = None,
            head: list[int] | None = None, constraints=None, images: tuple | None = None):
        """Submit a request now (so a full queue is a 503 even for streams) and return an async generator of
        ("text", delta), ("draft", payload), finally ("done", info). `raw`: special tokens stay in the text
        (the chat reply parser reads thoughts and tool calls from them). `timeout`: seconds from now (default: the
        server's --request-timeout) after which the request ends with a 408 and its row is freed. `head`: tokens
        clamped at the start of the reply's first canvas (a forced tool call), part of the reply. `constraints`:
        structured output (`structured_output`). `images`: the prompt's (`chat_io.prepare`)."""
        eng = state.ready()
        loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue()

        def emit(kind, payload):  # called from the engine thread: must never raise there
            try:
                loop.call_soon_threadsafe(q.put_nowait, (kind, payload))
            except RuntimeError:  # the event loop is closed (server shutting down)
                req.cancelled = True

        req = Request(prompt, params, emit, suffix=suffix, head=head, constraints=constraints, images=images)
        timeout = timeout or state.request_timeout
        try:
            eng.submit(req)
        except QueueFullError as e:
            raise APIError(503, str(e), "server_error", code="server_busy") from None
        except EngineDeadError as e:
            raise APIError(503, str(e), "server_error", code="engine_dead") from None
        state.active.add(req)
        return _events(http, eng, req, q, prompt, stops, raw, timeout)

    def json_reply(http, prompt, params, stops, timeout, images=None):
        """A json_object reply (serving.repair): rounds of `run`, within one deadline (each round's prompt starts
        with the request's, so its `images` serve every round)."""
        return json_object_events(lambda ids, p, t, c: collect(run(http, ids, p, stops, timeout=t, constraints=c,
                                                                   images=images)),
                                  state.tokenizer, prompt, params, timeout or state.request_timeout, state.engine.L,
                                  state.engine.V)

    async def _events(http, eng, req, q, prompt, stops, raw, timeout):
        tok = state.tokenizer
        tokens: list[int] = []
        sent = 0
        hold = max((len(s) for s in stops), default=1) - 1
        finished = False
        deadline = None if timeout is None else req.submitted + timeout
        watcher = asyncio.ensure_future(_hang_up(http, eng, req, q))
        try:
            while True:
                wait = 0.5 if deadline is None else max(0.0, min(0.5, deadline - time.monotonic()))
                try:
                    kind, payload = await asyncio.wait_for(q.get(), wait)
                except asyncio.TimeoutError:
                    kind = None
                if kind is None and deadline is not None and time.monotonic() >= deadline:
                    raise APIError(408, f"the request did not finish within its {timeout:g} s deadline",
                                   "timeout_error", param="timeout", code="request_timeout")
                if kind == "shutdown":
                    raise APIError(503, payload, "server_error", code="server_shutdown")
                if kind == "gone":  # the client disconnected; the engine has dropped the row
                    return
                if kind is None:
                    if not eng.alive:
                        raise APIError(500, f"engine failure: {eng.error}", "server_error")
                    continue
                if kind == "error":
                    raise APIError(500, payload, "server_error")
                if kind == "draft":
                    payload["text"] = tok.decode(payload["tokens"])
                    payload["pieces"] = [tok.decode([t]) for t in payload["tokens"]]
                    yield "draft", payload
                    continue
                if kind == "tokens":
                    tokens += payload
                    text = tok.decode(tokens, skip_special=not raw)
                    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
                    if cut >= 0:  # a stop sequence: the text ends before it, the request ends now
                        if cut > sent:
                            yield "text", text[sent:cut]
                        eng.cancel(req)
                        finished = True
                        yield "done", {"finish_reason": "stop", "completion_tokens": len(tokens),
                                       "prompt_tokens": len(prompt)}
                        return
                    safe = len(text) - hold
                    while safe > sent and text[safe - 1] == "\ufffd":  # an incomplete UTF-8 sequence
                        safe -= 1
                    if safe > sent:
                        yield "text", text[sent:safe]
                        sent = safe
                    continue
                if kind == "done":
                    text = tok.decode(tokens, skip_special=not raw)
                    if len(text) > sent:
                        yield "text", text[sent:]
                    finished = True
                    yield "done", payload
                    return
        finally:
            watcher.cancel()
            state.active.discard(req)
            if not finished:
                eng.cancel(req)

    async def _hang_up(http, eng, req, q):
        """Cancel the request the moment its client disconnects, streamed or not, so that it costs no decoder pass
        after the engine's next step."""
        await until_disconnected(http)
        eng.cancel(req)
        q.put_nowait(("gone", None))

    def prompt_ids(prompt) -> list[int]:
        tok = state.tokenizer
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
            if len(prompt) != 1:
                raise APIError(400, "only one prompt per request is supported", param="prompt",
                               code="unsupported_parameter")
            prompt = prompt[0]
        if isinstance(prompt, str):
            return tok.encode(prompt, add_bos=True)
        if not prompt:
            raise APIError(400, "prompt must not be empty", param="prompt")
        bad = [t for t in prompt if not 0 <= t < state.engine.V]
        if bad:
            raise APIError(400, f"prompt token ids outside the vocabulary: {bad[:5]}", param="prompt")
        return list(prompt)

    @app.post("/v1/completions", responses=documented(CompletionResponse, 400, 401, 404, 408, 413, 503,
                                                                 stream=True))
    async def completions(body: CompletionRequest, http: HttpRequest):
        eng = state.ready()
        check_model(body.model)
        reject_unsupported(body)
        stops = stops_of(body.stop)
        ids = prompt_ids(body.prompt)
        suffix = None
        constraints, max_tokens = structured_output(
            body.response_format, state.tokenizer, eng, len(ids),
            body.max_tokens if "max_tokens" in body.model_fields_set else None)
        if constraints is not None and body.suffix is not None:
            raise APIError(400, f"response_format {body.response_format['type']} cannot be combined with suffix",
                           param="response_format")
        max_tokens = max_tokens or body.max_tokens
        if body.suffix is not None:
            suffix = state.tokenizer.encode(body.suffix)
            if body.max_tokens + len(suffix) > eng.L:
                raise APIError(400, f"infill needs max_tokens + suffix tokens <= the canvas length {eng.L}, got "
                                    f"{body.max_tokens} + {len(suffix)}", param="suffix",
                               code="suffix_too_long")
        params = make_params(body, max_tokens, len(ids) + len(suffix or []), eng)
        state.http["completions"] += 1
        cid, created = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        gen = json_reply(http, ids, params, stops, body.timeout) if constraints is JSON_OBJECT else \
            run(http, ids, params, stops, suffix, timeout=body.timeout, constraints=constraints)

        def chunk(delta, finish):
            return {"id": cid, "object": "text_completion", "created": created, "model": state.model_name,
                    "choices": [] if delta is None else [{"index": 0, "text": delta.get("text", ""), "logprobs": None,
                                                          "finish_reason": finish}]}
        if body.stream:
            include = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(stream_openai(gen, chunk, include, None), media_type="text/event-stream")
        text, info = await collect(gen)
        return {"id": cid, "object": "text_completion", "created": created, "model": state.model_name,
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": info["finish_reason"]}],
                "usage": usage(info)}

    @app.post("/v1/chat/completions", responses=documented(ChatResponse, 400, 401, 404, 408, 413, 503,
                                                                       stream=True))
    async def chat(body: ChatRequest, http: HttpRequest):
        eng = state.ready()
        check_model(body.model)
        reject_unsupported(body)
        stops = stops_of(body.stop)
        tok = state.tokenizer
        if not tok.has_chat_template:
            raise APIError(400, "this checkpoint has no chat template; use /v1/completions", param="messages")
        ids, head, parsed, images = chat_io.prepare(body, tok, eng.model, state.image_dir)
        max_tokens = body.max_completion_tokens or body.max_tokens
        constraints, max_tokens = structured_output(body.response_format, tok, eng, len(ids), max_tokens)
        if constraints is not None and head:
            raise APIError(400, f"response_format {body.response_format['type']} cannot be combined with a forced "
                           "tool call", param="response_format")
        if max_tokens is None:
            max_tokens = max(1, min(eng.L, eng.context_length - len(ids)))
        if len(head) >= min(max_tokens, eng.L):
            raise APIError(400, f"the forced tool call opens with {len(head)} tokens, which needs max_tokens and the "
                                f"canvas ({eng.L}) above that, got max_tokens {max_tokens}",
                           param="max_tokens" if max_tokens <= eng.L else "tool_choice")
        params = make_params(body, max_tokens, len(ids), eng)
        state.http["chat"] += 1
        cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        gen = json_reply(http, ids, params, stops, body.timeout, images) if constraints is JSON_OBJECT else \
            run(http, ids, params, stops, raw=parsed, timeout=body.timeout, head=head, constraints=constraints,
                images=images)

        def chunk(delta, finish):
            return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": state.model_name,
                    "choices": [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None,
                                                          "finish_reason": finish}]}

        async def replies():
            """Text events become chat deltas; a parsed reply holds back thoughts and calls until they close."""
            reply = chat_io.ReplyStream()
            async for kind, payload in gen:
                if kind == "text":
                    delta = reply.feed(payload) if parsed else {"content": payload}
                    if delta:
                        yield kind, delta
                elif kind == "done" and parsed:
                    deltas, reason = reply.finish()
                    for delta in deltas:
                        yield "text", delta
                    yield kind, {**payload, "finish_reason": reason or payload["finish_reason"]}
                else:
                    yield kind, payload
        if body.stream:
            include = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(stream_openai(replies(), chunk, include, {"role": "assistant", "content": ""},
                                                   wrap=False), media_type="text/event-stream")
        text, info = await collect(gen)
        msg, reason = chat_io.message(parse_reply(text)) if parsed else (
            {"role": "assistant", "content": text}, None)
        return {"id": cid, "object": "chat.completion", "created": created, "model": state.model_name,
                "choices": [{"index": 0, "message": msg, "logprobs": None,
                             "finish_reason": reason or info["finish_reason"]}],
                "usage": usage(info)}

    @app.post("/infill", responses=documented(InfillResponse, 400, 408, 413, 503, stream=True))
    async def infill(body: InfillRequest, http: HttpRequest):
        eng = state.ready()
        tok = state.tokenizer
        extra = "".join(f"{c.get('filename', '')}\n{c.get('text', '')}\n" for c in body.input_extra)
        prefix = tok.encode(extra + body.input_prefix + body.prompt, add_bos=True)
        suffix = tok.encode(body.input_suffix)
        gap = body.n_predict if body.n_predict and body.n_predict > 0 else min(64, eng.L - len(suffix))
        if gap < 1 or gap + len(suffix) > eng.L:
            raise APIError(400, f"infill needs n_predict + suffix tokens <= the canvas length {eng.L}, got "
                                f"{gap} + {len(suffix)}", param="n_predict")
        params = make_params(body, gap, len(prefix) + len(suffix), eng)
        state.http["infill"] += 1
        gen = run(http, prefix, params, [], suffix)

        def result(text, info):
            return {"content": text, "stop": True, "tokens_predicted": info["completion_tokens"],
                    "tokens_evaluated": len(prefix), "stop_type": "eos" if info["finish_reason"] == "stop"
                    else "limit", "model": state.model_name}
        if body.stream:
            async def events():
                try:
                    async for kind, payload in gen:
                        if kind == "text":
                            yield sse({"content": payload, "stop": False})
                        elif kind == "done":
                            yield sse(result("", payload))
                except APIError as e:
                    yield sse(error_body(e.message, e.type, e.param, e.code))
            return StreamingResponse(events(), media_type="text/event-stream")
        text, info = await collect(gen)
        return result(text, info)

    add_playground(app)

    def openapi() -> dict:
        """FastAPI documents a 422 for every request body; this server answers invalid ones with a 400 (OpenAI's
        status, documented on each route), so the 422s and their schemas are dropped."""
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            for path in schema["paths"].values():
                for operation in path.values():
                    operation["responses"].pop("422", None)
            for name in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(name, None)
            app.openapi_schema = schema
        return app.openapi_schema
    app.openapi = openapi
    return app


def render_metrics(state: ServerState) -> str:
    lines = []

    def metric(name, kind, help_, value):
        lines.extend([f"# HELP {name} {help_}", f"# TYPE {name} {kind}", f"{name} {value}"])
    metric("dgemma_up", "gauge", "1 when the model is loaded and the engine loop runs",
           int(state.status == "ok" and state.engine is not None and state.engine.alive))
    eng = state.engine
    if eng is None:
        return "\n".join(lines) + "\n"
    running, waiting = eng.counts()
    m = eng.m
    metric("dgemma_requests_running", "gauge", "requests in the running batch", running)
    metric("dgemma_requests_waiting", "gauge", "requests queued for a batch slot", waiting)
    metric("dgemma_requests_total", "counter", "requests accepted by the engine", m["requests_total"])
    metric("dgemma_requests_finished_total", "counter", "requests completed", m["requests_finished"])
    metric("dgemma_requests_cancelled_total", "counter", "requests cancelled (client gone, stop sequence)",
           m["requests_cancelled"])
    metric("dgemma_requests_rejected_total", "counter", "requests refused because the queue was full",
           m["requests_rejected"])
    metric("dgemma_requests_failed_total", "counter", "requests that failed in the engine", m["requests_failed"])
    metric("dgemma_prompt_tokens_total", "counter", "prompt tokens prefilled", m["prompt_tokens"])
    metric("dgemma_generation_tokens_total", "counter", "tokens generated", m["generation_tokens"])
    metric("dgemma_decoder_passes_total", "counter", "decoder passes (one per row per step)", m["decoder_passes"])
    metric("dgemma_steps_total", "counter", "batched denoising steps", m["steps"])
    metric("dgemma_prefix_cache_hits_total", "counter", "prompts that extended a kept cache", m["prefix_hits"])
    metric("dgemma_prefix_cache_tokens_total", "counter", "prompt tokens not encoded again thanks to a kept cache",
           m["prefix_tokens_reused"])
    metric("dgemma_tokens_per_forward", "gauge", "generated tokens per decoder pass",
           m["generation_tokens"] / max(m["decoder_passes"], 1))
    metric("dgemma_batch_size_mean", "gauge", "mean rows per denoising step", m["row_steps"] / max(m["steps"], 1))
    lines += eng.step_hist.render("dgemma_step_latency_seconds", "one batched denoising step")
    lines += eng.request_hist.render("dgemma_request_latency_seconds", "submission to last token")
    lines += eng.ttft_hist.render("dgemma_time_to_first_token_seconds", "submission to first token")
    return "\n".join(lines) + "\n"
