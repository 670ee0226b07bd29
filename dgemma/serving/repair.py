"""`response_format {"type": "json_object"}` in the server: rounds of ordinary requests, validated and repaired.

Each round is a request through the batcher like any other (so it is batched, cancelled and timed out like any
other); its prompt is the request's prompt plus the reply's valid part so far, and the round's first token is
restricted to those that can come next there and are not just whitespace (`next_tokens`), so every round adds
at least one valid token. The reply is checked with dgemma.json_text; from its first error on it is generated
again, up to ROUNDS more times, and then cut and completed. The text is sent once, whole, when it is final:
nothing streamed is ever taken back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

from ..constraints import Constraints
from ..json_text import close, next_tokens, scan

ROUNDS = 3


async def json_object_events(run_round, tokenizer, prompt: list[int], params, timeout: float | None,
                             canvas: int, vocab: int):
    """("text", the object), then ("done", info), like the server's other event streams. `run_round(ids, params,
    timeout, constraints)` awaits one request's (text, info); `timeout`: seconds for all rounds together (None: no
    limit); `canvas`, `vocab`: the model's canvas length and vocabulary size."""
    deadline = None if timeout is None else time.monotonic() + timeout
    kept, info, reason = "{", None, "stop"  # a JSON object opens with a brace: it starts the reply
    for r in range(ROUNDS + 1):
        kept_ids = tokenizer.encode(kept)
        budget = params.gen.max_new_tokens - len(kept_ids)
        if budget < 1:
            reason = "length"
            break
        p = dataclasses.replace(params, seed=None if params.seed is None else params.seed + r,
                                gen=dataclasses.replace(params.gen, max_new_tokens=budget))
        left = None if deadline is None else max(1e-3, deadline - time.monotonic())
        allowed = await asyncio.to_thread(next_tokens, tokenizer, kept, True)  # (a large vocabulary takes a while)
        first = Constraints.build([[allowed]], canvas, vocab) if allowed else None
        text, info = await run_round(prompt + kept_ids, p, left, first)
        s = scan(kept + text)
        if s.end is not None or s.error is None:  # closed, or valid until the tokens ran out
            kept += text
            reason = "stop" if s.end is not None else info["finish_reason"]
            break
        kept = (kept + text)[:s.error]
    final = close(kept)
    while len(tokenizer.encode(final)) > params.gen.max_new_tokens and len(kept) > 1:  # the completion must fit too
        kept, reason = kept[:-1], "length"
        final = close(kept)
    yield "text", final
    yield "done", {**(info or {}), "finish_reason": reason, "prompt_tokens": len(prompt),
                   "completion_tokens": len(tokenizer.encode(final))}
