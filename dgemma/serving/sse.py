"""The server's event streams as HTTP bodies: ("text", delta), ("draft", payload) and ("done", info) events
collected into one text, or sent as OpenAI server-sent events."""

from __future__ import annotations

import json

from .schemas import APIError, error_body


async def collect(gen):
    parts, info = [], None
    async for kind, payload in gen:
        if kind == "text":
            parts.append(payload)
        elif kind == "done":
            info = payload
    if info is None:  # client went away
        raise APIError(499, "client disconnected")
    return "".join(parts), info


def usage(info):
    return {"prompt_tokens": info["prompt_tokens"], "completion_tokens": info["completion_tokens"],
            "total_tokens": info["prompt_tokens"] + info["completion_tokens"]}


def sse(obj) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


async def stream_openai(gen, make_chunk, include_usage: bool, first: dict | None, wrap: bool = True):
    """SSE chunks of a generator's events; `wrap`: text events carry a string (else a ready delta)."""
    try:
        if first is not None:
            yield sse(make_chunk(first, None))
        async for kind, payload in gen:
            if kind == "text":
                yield sse(make_chunk({"text": payload} if wrap else payload, None))
            elif kind == "draft":
                chunk = make_chunk({}, None)
                chunk["dgemma_draft"] = payload
                yield sse(chunk)
            elif kind == "done":
                yield sse(make_chunk({}, payload["finish_reason"]))
                if include_usage:
                    chunk = make_chunk(None, None)
                    chunk["choices"], chunk["usage"] = [], usage(payload)
                    yield sse(chunk)
        yield "data: [DONE]\n\n"
    except APIError as e:
        yield sse(error_body(e.message, e.type, e.param, e.code))
        yield "data: [DONE]\n\n"
