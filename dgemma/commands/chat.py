"""`dgemma chat`: multi-turn conversation in the Gemma 4 turn format, reusing the KV cache across turns."""

from __future__ import annotations

import sys


from ..cache import CacheFullError
from ..engine import Engine
from .generate import (CommandError, LiveView, add_model_args, add_sampling_args, check_context, cut_at_stop,
                       generation_config, load, run_generation)


class Conversation:
    """Keeps the cache between turns: each turn encodes only what the cache has not seen yet.

    After a generation the cache holds everything but the last committed canvas, so the next turn's input
    is that canvas's reply (closed with <turn|>) followed by the new user turn and the model-turn header."""

    def __init__(self, model, tokenizer, cfg, context: int, system: str | None = None, seed: int | None = None):
        if not tokenizer.has_chat_template:
            raise CommandError("this checkpoint's tokenizer has no Gemma 4 turn tokens (<|turn>, <turn|>); "
                               "use `dgemma generate` instead")
        self.model, self.tok, self.cfg, self.seed = model, tokenizer, cfg, seed
        self.engine = Engine(model)
        self.cache = model.new_cache(1, context)
        self.system = system
        self.pending: list[int] = []  # reply tokens not yet in the cache
        self.turns = 0
        self.end_turn = tokenizer.encode("<turn|>")[0]

    def next_input(self, user: str) -> list[int]:
        if self.turns == 0:
            messages = ([{"role": "system", "content": self.system}] if self.system else []) + \
                [{"role": "user", "content": user}]
            return self.tok.apply_chat_template(messages, add_generation_prompt=True)
        reply = self.pending if self.pending[-1:] == [self.end_turn] else self.pending + [self.end_turn]
        return reply + self.tok.encode(f"\n<|turn>user\n{user}<turn|>\n<|turn>model\n")

    def say(self, user: str, view: LiveView | None = None) -> str:
        if not user.strip():
            raise CommandError("empty message")
        ids = self.next_input(user)
        check_context(self.model, self.cache.length + len(ids), self.cfg.max_new_tokens)
        seed = None if self.seed is None else self.seed + self.turns
        try:
            out, new_ids, _ = run_generation(self.engine, ids, self.cfg, seed, self.tok, view, cache=self.cache)
        except CacheFullError:
            raise CommandError(f"the conversation no longer fits the {self.cache.max_length}-token context; "
                               "start a new chat (or raise --context)") from None
        L = self.model.config.canvas_length
        last = out.sequences[0, -L:].tolist()
        stop_at = len(cut_at_stop(last, self.cfg))
        self.pending = last[:stop_at + 1] if stop_at < L else last  # keep the closing stop token
        self.turns += 1
        return self.tok.decode(new_ids)


def run(args) -> int:
    model, tok = load(args)
    cfg = generation_config(args, model, tok)
    context = min(args.context, model.config.max_position_embeddings)
    chat = Conversation(model, tok, cfg, context, args.system, args.seed)
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            print("\x1b[1myou>\x1b[0m ", end="", flush=True)
        line = sys.stdin.readline()
        if not line or line.strip() in ("/exit", "/quit"):
            return 0
        if not line.strip():
            continue
        view = LiveView(tok) if interactive and not args.quiet else None
        try:
            reply = chat.say(line.rstrip("\n"), view)
        except CommandError as e:
            print(f"dgemma chat: {e}", file=sys.stderr)
            if "no longer fits" in str(e):
                return 2
            continue
        if view:
            view.finish(reply)
        else:
            print(reply, flush=True)


def register(sub) -> None:
    p = sub.add_parser("chat", help="multi-turn chat with a checkpoint that has the Gemma 4 chat format",
                       description="Chat on stdin/stdout. Each turn reuses the KV cache of the previous ones. "
                       "Type /exit (or end input) to leave.")
    add_model_args(p)
    add_sampling_args(p)
    p.add_argument("--system", default=None, help="system prompt for the conversation")
    p.add_argument("--context", type=int, default=4096, help="KV cache size in tokens (default 4096)")
    p.add_argument("--quiet", action="store_true", help="no live denoising view, only the replies")
    p.set_defaults(func=run)
