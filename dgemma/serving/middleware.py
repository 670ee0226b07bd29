"""What every request passes before a route sees it: the API key on /v1/*, and a bound on the body's size and
JSON nesting. Pure ASGI, because starlette's BaseHTTPMiddleware would hide client disconnects from the routes."""

from __future__ import annotations

import re

import numpy as np
from fastapi.responses import JSONResponse

from .schemas import error_body

MAX_BODY_BYTES = 16 * 2**20  # a 256K-token prompt sent as ids is under 2 MiB
MAX_JSON_DEPTH = 64  # the deepest request OpenAI clients send (a tool's parameter schema) is a handful of levels
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_DEPTH = np.zeros(256, dtype=np.int8)
_DEPTH[list(b"[{")] = 1
_DEPTH[list(b"]}")] = -1


def json_depth(body: bytes) -> int:
    """How deeply the JSON `body` nests arrays and objects, computed without parsing it: json.loads recurses once
    per level and a body of a few kilobytes of brackets ends in RecursionError (a 500) inside the framework."""
    bare = _STRINGS.sub(b"", body)  # brackets inside strings do not nest
    if not bare:
        return 0
    return int(np.cumsum(_DEPTH[np.frombuffer(bare, dtype=np.uint8)], dtype=np.int64).max(initial=0))


async def until_disconnected(http) -> None:
    """Return when the client of `http` (a request whose body has been read) disconnects: the next ASGI message
    is then the disconnect, so a route can stop its work at once instead of polling."""
    while (await http.receive())["type"] != "http.disconnect":
        pass


async def _reject(send, receive, scope, status: int, message: str, code: str, param: str | None = None):
    await JSONResponse(error_body(message, "invalid_request_error", param, code), status_code=status)(
        scope, receive, send)


class GuardMiddleware:
    """`Authorization: Bearer KEY` on /v1/* when the server has a key; request bodies over `max_bytes` get 413 and
    bodies nested deeper than MAX_JSON_DEPTH get 400, before anything parses them. The body read here is handed on
    unchanged; later receive() calls (disconnect notices) pass through."""

    def __init__(self, app, state, max_bytes: int = MAX_BODY_BYTES):
        self.app, self.state, self.max_bytes = app, state, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        key = self.state.api_key
        if key and scope["path"].startswith("/v1/"):
            header = headers.get(b"authorization", b"").decode("latin-1")
            if not header.startswith("Bearer ") or header[7:].strip() != key:
                msg = "You didn't provide an API key." if not header else "Incorrect API key provided."
                return await _reject(send, receive, scope, 401, msg, "invalid_api_key")
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        too_big = f"the request body is larger than the server's limit of {self.max_bytes} bytes"
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await _reject(send, receive, scope, 413, too_big, "request_too_large")
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client left before sending its body
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await _reject(send, receive, scope, 413, too_big, "request_too_large")
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if json_depth(body) > MAX_JSON_DEPTH:
            return await _reject(send, receive, scope, 400, f"the request body nests JSON more than "
                                 f"{MAX_JSON_DEPTH} levels deep", "json_too_deep")
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()
        await self.app(scope, replay, send)
