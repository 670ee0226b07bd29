"""The chat endpoint's two ends: OpenAI messages, tools and tool_choice in, a prompt out (`prepare`); the model's
text in, OpenAI content, reasoning_content and tool_calls out, whole or as stream deltas (`ReplyStream`)."""
from __future__ import annotations

import base64
import binascii
import json
import re
from pathlib import Path

from ..chat_format import parse_reply
from .schemas import APIError

_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
# While a thought or a call is open (its closing marker not yet generated), nothing after its opening marker is
# streamed as content.
_OPENERS = ("<|channel>", "<|tool_call>")
_CLOSERS = {"<|channel>": "<channel|>", "<|tool_call>": "<tool_call|>"}


def check_tools(tools, tool_choice) -> tuple[list[dict] | None, str | None]:
    """(the tools to declare, the function a reply must call: a name, "" for any, None for no constraint)."""
    if not tools:
        if tool_choice not in (None, "none", "auto"):
            raise APIError(400, "tool_choice needs tools", param="tool_choice")
        return None, None
    names = []
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(fn, dict):
            raise APIError(400, "each tool must be {\"type\": \"function\", \"function\": {...}}", param=f"tools.{i}")
        if not isinstance(fn.get("name"), str) or not _NAME.fullmatch(fn["name"]):
            raise APIError(400, "function.name must be 1-64 letters, digits, '_', '.' or '-'",
                           param=f"tools.{i}.function.name")
        params = fn.get("parameters")
        if params is not None and (not isinstance(params, dict) or params.get("type", "object") != "object"
                                   or not isinstance(params.get("properties", {}), dict)):
            raise APIError(400, "function.parameters must be a JSON Schema object with 'properties'",
                           param=f"tools.{i}.function.parameters")
        if fn["name"] in names:
            raise APIError(400, f"duplicate tool name {fn['name']!r}", param=f"tools.{i}.function.name")
        names.append(fn["name"])
    if tool_choice in (None, "auto"):
        return tools, None
    if tool_choice == "none":
        return None, None  # not declared: the model answers in text
    if tool_choice == "required":
        return tools, ""
    name = tool_choice.get("function", {}).get("name") if isinstance(tool_choice, dict) else None
    if name is None:
        raise APIError(400, "tool_choice must be 'auto', 'none', 'required' or {\"type\": \"function\", "
                            "\"function\": {\"name\": ...}}", param="tool_choice")
    if name not in names:
        raise APIError(400, f"tool_choice names {name!r}, which is not among the tools", param="tool_choice")
    return tools, name


def image_source(part: dict, image_dir: Path | None, param: str):
    """An image_url part's image: the bytes of a data: URL, or a path inside the server's --image-dir; never
    fetched from the network."""
    url = (part.get("image_url") or {}).get("url") if isinstance(part.get("image_url"), dict) else None
    if not isinstance(url, str) or not url:
        raise APIError(400, "an image_url part needs image_url.url", param=param)
    if url.startswith("data:"):
        head, _, data = url.partition(",")
        if not head.endswith(";base64"):
            raise APIError(400, "a data: image URL must be base64 (data:image/png;base64,...)", param=param)
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise APIError(400, "the data: image URL is not valid base64", param=param) from None
    if "://" in url and not url.startswith("file://"):
        raise APIError(400, "remote image URLs are not fetched: send the image as a data: URL", param=param)
    if image_dir is None:
        raise APIError(400, "local image paths need a server started with --image-dir", param=param)
    path = Path(url.removeprefix("file://")).resolve()
    if not path.is_relative_to(image_dir.resolve()):
        raise APIError(400, f"{url} is outside the server's --image-dir", param=param)
    return path


def convert_messages(messages, image_dir: Path | None = None) -> tuple[list[dict], list]:
    """OpenAI messages as chat_format takes them (tool-call arguments parsed from their JSON strings), and the
    images of their image_url parts in order (`image_source`)."""
    out, images = [], []
    for i, m in enumerate(messages):
        d = m.model_dump(exclude_none=True)
        for j, call in enumerate(d.get("tool_calls") or ()):
            fn = call["function"]
            args = fn["arguments"]
            if isinstance(args, str):
                try:
                    fn["arguments"] = json.loads(args) if args.strip() else {}
                except json.JSONDecodeError as e:
                    raise APIError(400, f"arguments are not valid JSON ({e.msg})",
                                   param=f"messages.{i}.tool_calls.{j}.function.arguments") from None
        for j, part in enumerate(d["content"] if isinstance(d.get("content"), list) else ()):
            if part.get("type") == "image_url" and d["role"] == "user":
                images.append(image_source(part, image_dir, f"messages.{i}.content.{j}.image_url"))
            elif part.get("type") != "text":
                raise APIError(400, "only text parts, and image_url parts in user messages, are supported",
                               param=f"messages.{i}.content", code="unsupported_parameter")
        out.append(d)
    return out, images


def prepare(body, tok, model=None, image_dir: Path | None = None) -> tuple[list[int], str, bool, tuple | None]:
    """(prompt ids, the ids a forced tool call clamps at the start of the reply's canvas, whether the reply is
    parsed for thoughts and calls, the engine's `images` for the prompt's images or None)."""
    tools, must_call = check_tools(body.tools, body.tool_choice)
    kwargs = dict(body.chat_template_kwargs or {})
    unknown = set(kwargs) - {"enable_thinking"}
    if unknown:
        raise APIError(400, f"unsupported chat_template_kwargs: {', '.join(sorted(unknown))}",
                       param="chat_template_kwargs")
    thinking = kwargs.get("enable_thinking", False)
    if not isinstance(thinking, bool):
        raise APIError(400, f"chat_template_kwargs.enable_thinking must be true or false, got {thinking!r}",
                       param="chat_template_kwargs.enable_thinking")
    if thinking and tok.chat_template is not None and "<|channel>" not in tok.chat_template:
        raise APIError(400, "this checkpoint's chat template has no thought channel", param="chat_template_kwargs")
    messages, sources = convert_messages(body.messages, image_dir)
    try:
        text = tok.render_chat(messages, True, tools=tools, enable_thinking=thinking)
    except ValueError as e:
        raise APIError(400, str(e), param="messages") from None
    forced = "" if must_call is None else "<|tool_call>call:" + (f"{must_call}{{" if must_call else "")
    ids, images = tok.encode(text), None
    if sources:
        from ..vision import ImageError, PromptImages, encode_with_images
        try:
            read = PromptImages.read(model, sources, body.max_soft_tokens or 280)
            ids, images = encode_with_images(tok, text, read.runs), (read.soft, None)
        except ImageError as e:
            param = "max_soft_tokens" if "max_soft_tokens" in str(e) else "messages"
            raise APIError(400, str(e), param=param) from None
    return ids, tok.encode(forced) if forced else [], bool(tools) or thinking, images


def message(reply) -> tuple[dict, str | None]:
    """The OpenAI assistant message of a parsed reply, and "tool_calls" when it calls tools."""
    msg = {"role": "assistant", "content": reply.content or (None if reply.tool_calls else "")}
    if reply.reasoning:
        msg["reasoning_content"] = msg["reasoning"] = reply.reasoning
    if reply.tool_calls:
        msg["tool_calls"] = reply.tool_calls
    return msg, "tool_calls" if reply.tool_calls else None


class ReplyStream:
    """Turns the growing reply text into chat deltas. Content is streamed as it settles; a thought or a tool call
    is held until its closing marker (or the end) and never leaks into `content`."""

    def __init__(self):
        self.text, self.sent = "", ""  # the reply so far, and the content already sent

    def _safe(self) -> int:
        """How far the text is plain content: up to the first opener still waiting for its closer, or a
        partial marker at the very end."""
        cut = len(self.text)
        for opener in _OPENERS:
            start = self.text.find(opener)
            while start >= 0:
                if self.text.find(_CLOSERS[opener], start) < 0:
                    cut = min(cut, start)
                    break
                start = self.text.find(opener, start + 1)
        tail = self.text.rfind("<", 0, cut)
        if tail >= 0 and ">" not in self.text[tail:cut]:
            cut = tail  # maybe the start of a marker
        return cut

    def feed(self, delta: str) -> dict | None:
        """The content delta once `delta` is appended (None when nothing new settled)."""
        self.text += delta
        content = parse_reply(self.text[:self._safe()]).content
        if len(content) > len(self.sent) and content.startswith(self.sent):  # content only grows: never retracted
            out, self.sent = content[len(self.sent):], content
            return {"content": out}
        return None

    def finish(self) -> tuple[list[dict], str | None]:
        """The last deltas (the rest of the content, reasoning_content, tool_calls) and the finish reason."""
        reply = parse_reply(self.text)
        deltas = []
        if len(reply.content) > len(self.sent) and reply.content.startswith(self.sent):
            deltas.append({"content": reply.content[len(self.sent):]})
        if reply.reasoning:
            deltas.append({"reasoning_content": reply.reasoning, "reasoning": reply.reasoning})
        if reply.tool_calls:
            deltas.append({"tool_calls": [dict(c, index=i) for i, c in enumerate(reply.tool_calls)]})
        return deltas, "tool_calls" if reply.tool_calls else None
