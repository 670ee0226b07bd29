"""`dgemma chat`: multi-turn conversation in the checkpoint's chat format (system prompt, thinking, tools), reusing
the KV cache across turns wherever the re-rendered conversation extends what the cache holds."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..cache import CacheFullError
from ..chat_format import Reply, parse_reply
from ..engine import Engine
from .generate import (CommandError, LiveView, add_image_args, add_model_args, add_sampling_args, check_context,
                       generation_config, load, read_images, run_generation)


class Conversation:
    """The messages so far, and a cache of the tokens already encoded.

    Every turn renders the whole conversation again, as the template defines it (earlier thoughts stripped, tool
    results inside the model's turn); the cache is reused when that rendering starts with the tokens it holds, and
    started afresh when not, so a turn's tokens never depend on whether the cache was reused."""

    def __init__(self, model, tokenizer, cfg, context: int, system: str | None = None, seed: int | None = None,
                 tools: list | None = None, think: bool = False, reuse: bool = True, images=None):
        if not tokenizer.has_chat_template:
            raise CommandError("this checkpoint's tokenizer has no chat template and no Gemma 4 turn tokens "
                               "(<|turn>, <turn|>); use `dgemma generate` instead")
        self.model, self.tok, self.cfg, self.seed = model, tokenizer, cfg, seed
        self.tools, self.think, self.reuse, self.context = tools, think, reuse, context
        self.engine = Engine(model)
        self.system, self.images = system, images  # images (vision.PromptImages): shown with the first message
        self.reset()

    def reset(self) -> None:
        self.messages = [{"role": "system", "content": self.system}] if self.system else []
        self.cache, self.seen, self.turns = self.model.new_cache(1, self.context), [], 0
        self.reused = 0  # prompt tokens the last turn did not encode again

    def say(self, user: str, view: LiveView | None = None) -> Reply:
        if not user.strip():
            raise CommandError("empty message")
        first = not any(m["role"] == "user" for m in self.messages)
        if first and self.images is not None:
            self.messages.append({"role": "user", "content": [{"type": "image"}] * len(self.images.runs)
                                  + [{"type": "text", "text": user}]})
        else:
            self.messages.append({"role": "user", "content": user})
        return self._respond(view)

    def answer(self, results: list[tuple[str, str]], view: LiveView | None = None) -> Reply:
        """Continue after tool calls with their results: (tool_call_id, content) pairs."""
        self.messages += [{"role": "tool", "tool_call_id": cid, "content": content} for cid, content in results]
        return self._respond(view)

    def _respond(self, view) -> Reply:
        images = None
        if self.images is None:
            ids = self.tok.apply_chat_template(self.messages, True, self.tools, self.think)
        else:
            from ..vision import encode_with_images
            ids = encode_with_images(self.tok, self.tok.render_chat(self.messages, True, self.tools, self.think),
                                     self.images.runs)
        if not (self.reuse and ids[:len(self.seen)] == self.seen and self.cache.length == len(self.seen)):
            self.cache, self.seen = self.model.new_cache(1, self.context), []
        new = ids[len(self.seen):]
        self.reused = len(self.seen)
        check_context(self.model, len(ids), self.cfg.max_new_tokens)
        seed = None if self.seed is None else self.seed + self.turns
        if self.images is not None and self.model.config.image_token_id in new:  # not yet in the cache
            images = (self.images.soft, None)
        try:
            out, new_ids, _ = run_generation(self.engine, new, self.cfg, seed, self.tok, view, cache=self.cache,
                                             images=images)
        except CacheFullError:
            raise CommandError(f"the conversation no longer fits the {self.cache.max_length}-token context; "
                               "/reset it (or raise --context)") from None
        L = self.model.config.canvas_length
        canvases = out.sequences[0, len(new):].tolist()
        self.seen = ids + canvases[:len(canvases) - L]  # the cache holds every committed canvas but the last
        self.turns += 1
        reply = parse_reply(self.tok.decode(new_ids, skip_special=False))
        self.messages.append({"role": "assistant", "content": reply.content, "reasoning_content": reply.reasoning,
                              "tool_calls": [{**c, "function": {"name": c["function"]["name"],
                                                                "arguments": json.loads(c["function"]["arguments"])}}
                                             for c in reply.tool_calls] or None})
        return reply


def read_tools(path: str | None) -> list | None:
    if path is None:
        return None
    try:
        tools = json.loads(Path(path).read_text())
    except OSError as e:
        raise CommandError(f"--tools {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise CommandError(f"--tools {path}: not valid JSON ({e.msg}, line {e.lineno})") from None
    tools = tools.get("tools", tools) if isinstance(tools, dict) else tools
    if not isinstance(tools, list) or not all(isinstance(t, dict) and isinstance(t.get("function"), dict)
                                              and isinstance(t["function"].get("name"), str) for t in tools):
        raise CommandError(f"--tools {path}: expected a list of {{\"type\": \"function\", \"function\": "
                           "{\"name\": ...}} objects")
    names = [t["function"]["name"] for t in tools]
    if len(set(names)) != len(names):
        raise CommandError(f"--tools {path}: duplicate tool name")
    return tools


def show(reply: Reply, view, interactive: bool) -> None:
    if reply.reasoning and interactive:
        print(f"\x1b[2m{reply.reasoning}\x1b[0m", file=sys.stderr)
    if view:
        view.finish(reply.content)
    else:
        print(reply.content, flush=True)


def run(args) -> int:
    model, tok = load(args)
    cfg = generation_config(args, model, tok)
    context = min(args.context, model.config.max_position_embeddings)
    chat = Conversation(model, tok, cfg, context, args.system, args.seed, read_tools(args.tools), args.think,
                        images=read_images(args, model))
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            print("\x1b[1myou>\x1b[0m ", end="", flush=True)
        line = sys.stdin.readline()
        if not line or line.strip() in ("/exit", "/quit"):
            return 0
        if line.strip() == "/reset":
            chat.reset()
            print("(conversation reset)", file=sys.stderr)
            continue
        if not line.strip():
            continue
        view = LiveView(tok) if interactive and not args.quiet else None
        try:
            reply = chat.say(line.rstrip("\n"), view)
            show(reply, view, interactive)
            while reply.tool_calls:  # ask for each call's result, then let the model go on
                results = []
                for call in reply.tool_calls:
                    print(f"call {call['function']['name']}({call['function']['arguments']})", flush=True)
                    if interactive:
                        print("\x1b[1mresult>\x1b[0m ", end="", flush=True)
                    results.append((call["id"], sys.stdin.readline().rstrip("\n")))
                view = LiveView(tok) if interactive and not args.quiet else None
                reply = chat.answer(results, view)
                show(reply, view, interactive)
        except CommandError as e:
            print(f"dgemma chat: {e}", file=sys.stderr)
            if "no longer fits" in str(e):
                return 2


def register(sub) -> None:
    p = sub.add_parser("chat", help="multi-turn chat with a checkpoint that has the Gemma 4 chat format",
                       description="Chat on stdin/stdout. Each turn reuses the KV cache of the previous ones "
                       "where it can. Type /reset to start over, /exit (or end input) to leave.")
    add_model_args(p)
    add_sampling_args(p)
    p.add_argument("--system", default=None, help="system prompt for the conversation")
    p.add_argument("--think", action="store_true",
                   help="thinking mode: the model reasons in its thought channel first (shown dimmed)")
    p.add_argument("--tools", default=None, metavar="FILE.json",
                   help="OpenAI-style tool declarations; each call the model makes is printed and its result read "
                   "from the next input line")
    p.add_argument("--context", type=int, default=4096, help="KV cache size in tokens (default 4096)")
    p.add_argument("--quiet", action="store_true", help="no live denoising view, only the replies")
    add_image_args(p)
    p.set_defaults(func=run)
