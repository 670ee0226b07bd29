"""The Gemma 4 chat format of DiffusionGemma's instruction-tuned checkpoint, written out in Python: rendering a
conversation (system turn, thinking, tool declarations, tool calls and responses) and parsing a reply back into
content, reasoning and tool calls.

The rules follow the checkpoint's `diffusion_gemma.jinja` (tests render both and compare, string for string):
- a system turn opens only for a system/developer first message, tools, or thinking; `<|think|>` leads it;
- tools are declared as `<|tool>declaration:NAME{description:...,parameters:{...}}<tool|>`, keys sorted
  case-insensitively and types upper-cased;
- an assistant's calls are `<|tool_call>call:NAME{key:value,...}<tool_call|>`, strings inside `<|"|>`; the role-"tool"
  messages that follow are rendered inside the same model turn as `<|tool_response>response:NAME{...}<tool_response|>`,
  the name resolved through `tool_call_id`;
- thoughts (`reasoning` / `reasoning_content`) are kept only after the last user message; thought text inside an
  assistant's content is stripped;
- consecutive assistant messages continue one model turn.
"""
from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

Q = '<|"|>'  # the string quote of the argument syntax
MEDIA = {"image": "<|image|>", "image_url": "<|image|>", "audio": "<|audio|>", "input_audio": "<|audio|>",
         "video": "<|video|>"}
ROLES = ("system", "developer", "user", "assistant", "model", "tool")
_STANDARD_KEYS = ("description", "type", "properties", "required", "nullable")


def _sorted(d: Mapping):
    return sorted(d.items(), key=lambda kv: str(kv[0]).lower())  # jinja's dictsort: case-insensitive keys


_MISSING = object()


def _upper(value) -> str:
    """jinja's `x | upper`: '' for a missing key, 'NONE' for None."""
    return "" if value is _MISSING else str(value).upper()


def argument(value, escape_keys: bool = True) -> str:
    """A value in the argument syntax: null, true/false, numbers, <|"|>strings<|"|>, {maps} and [lists]."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return Q + value + Q
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "{" + ",".join((Q + str(k) + Q if escape_keys else str(k)) + ":" + argument(v, escape_keys)
                              for k, v in _sorted(value)) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(argument(v, escape_keys) for v in value) + "]"
    return str(value)


def _quoted_list(items) -> str:
    return "[" + ",".join(Q + str(i) + Q for i in items) + "]"


class _Commas:
    """The template's add_comma: a comma before every field but the first."""

    def __init__(self, started: bool = False):
        self.started = started

    def __call__(self) -> str:
        was, self.started = self.started, True
        return "," if was else ""


def _parameters(properties: Mapping, filter_keys: bool = False) -> str:
    out, first = [], True
    for key, value in _sorted(properties):
        if filter_keys and key in _STANDARD_KEYS:
            continue
        if not first:
            out.append(",")
        first = False
        value = value if isinstance(value, Mapping) else {}
        comma = _Commas()
        out.append(f"{key}:{{")
        if value.get("description"):
            out.append(f"description:{Q}{value['description']}{Q}")
            comma.started = True
        kind = _upper(value.get("type", _MISSING))
        if kind == "STRING" and value.get("enum"):
            out.append(comma() + "enum:" + argument(value["enum"]))
        elif kind == "ARRAY" and isinstance(value.get("items"), Mapping) and value["items"]:
            out.append(comma() + "items:{")
            fields = []
            for item_key, item_value in _sorted(value["items"]):
                if item_value is None:
                    continue
                if item_key == "properties":
                    fields.append("properties:{" + (_parameters(item_value) if isinstance(item_value, Mapping)
                                                    else "") + "}")
                elif item_key == "required":
                    fields.append("required:" + _quoted_list(item_value))
                elif item_key == "type":
                    fields.append("type:" + argument(_upper(item_value) if isinstance(item_value, str)
                                                     else [_upper(t) for t in item_value]))
                else:
                    fields.append(f"{item_key}:" + argument(item_value))
            out.append(",".join(fields) + "}")
        if value.get("nullable"):
            out.append(comma() + "nullable:true")
        if kind == "OBJECT":
            if isinstance(value.get("properties"), Mapping):
                out.append(comma() + "properties:{" + _parameters(value["properties"]) + "}")
            else:
                out.append(comma() + "properties:{" + _parameters(value, filter_keys=True) + "}")
            if value.get("required"):
                out.append(comma() + "required:" + _quoted_list(value["required"]))
        out.append(comma() + f"type:{Q}{kind}{Q}}}")
    return "".join(out)


def declaration(tool: Mapping) -> str:
    """`declaration:NAME{...}` of one OpenAI-style tool ({"type": "function", "function": {...}})."""
    fn = tool["function"]
    out = [f"declaration:{fn['name']}{{description:{Q}{fn.get('description') or ''}{Q}"]
    params = fn.get("parameters")
    if params:
        out.append(",parameters:{")
        if params.get("properties"):
            out.append("properties:{" + _parameters(params["properties"]) + "},")
        if params.get("required"):
            out.append("required:" + _quoted_list(params["required"]) + ",")
        if params.get("type"):
            out.append(f"type:{Q}{_upper(params['type'])}{Q}}}")
    if "response" in fn:
        response = fn["response"] or {}
        out.append(",response:{")
        if response.get("description"):
            out.append(f"description:{Q}{response['description']}{Q},")
        if _upper(response.get("type", _MISSING)) == "OBJECT":
            out.append(f"type:{Q}OBJECT{Q}}}")
    out.append("}")
    return "".join(out).strip()


def tool_response(name: str, response) -> str:
    if isinstance(response, Mapping):
        body = ",".join(f"{k}:" + argument(v, escape_keys=False) for k, v in _sorted(response))
    else:
        body = "value:" + argument(response, escape_keys=False)
    return f"<|tool_response>response:{name}{{{body}}}<tool_response|>"


def strip_thinking(text: str) -> str:
    """Content with any `<|channel>...<channel|>` thought removed, trimmed."""
    return "".join(part.split("<|channel>")[0] for part in text.split("<channel|>")).strip()


def _content(content, model: bool) -> str:
    clean = strip_thinking if model else str.strip
    if isinstance(content, str):
        return clean(content)
    if isinstance(content, Sequence):
        return "".join(clean(item.get("text") or "") if item.get("type") == "text" else MEDIA.get(item.get("type"), "")
                       for item in content)
    return ""


def _system_text(content) -> str:
    if isinstance(content, str):
        return content.strip()
    return "".join((item.get("text") or "").strip() + " " for item in content or ())


def check_messages(messages: Sequence[Mapping]) -> None:
    """Raise ValueError naming the first message that cannot be rendered (the template would drop or garble it)."""
    calls = None  # the ids of the tool calls the latest tool messages answer
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise ValueError(f"message {i}: expected a mapping with 'role' and 'content', got {type(m).__name__}")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise ValueError(f"message {i}: unknown role {role!r} (expected one of {', '.join(ROLES)})")
        if content is not None and not isinstance(content, (str, list)):
            raise ValueError(f"message {i}: content must be a string or a list of parts, got {type(content).__name__}")
        if content is None and role not in ("assistant", "model", "tool"):
            raise ValueError(f"message {i}: {role} message without content")
        if isinstance(content, list) and not all(isinstance(p, Mapping) for p in content):
            raise ValueError(f"message {i}: every content part must be an object with a 'type'")
        if role == "tool":
            if calls is None:
                raise ValueError(f"message {i}: a tool message must follow an assistant message with tool_calls")
            if m.get("tool_call_id") is not None and m["tool_call_id"] not in calls:
                raise ValueError(f"message {i}: tool_call_id {m['tool_call_id']!r} matches no call of message "
                                 f"{calls[None]}")
            continue
        calls = None
        for tc in m.get("tool_calls") or ():
            fn = tc.get("function") if isinstance(tc, Mapping) else None
            if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
                raise ValueError(f"message {i}: a tool call needs function.name")
            if fn.get("arguments") is not None and not isinstance(fn["arguments"], Mapping):
                raise ValueError(f"message {i}: tool call arguments must be an object (parse the JSON string first)")
            calls = calls or {None: i}
            calls[tc.get("id")] = True


def render(messages: Sequence[Mapping], add_generation_prompt: bool = True, tools: Sequence[Mapping] | None = None,
           enable_thinking: bool = False, preserve_thinking: bool = False, bos: str = "<bos>") -> str:
    """The chat text of a conversation, as the checkpoint's template renders it."""
    check_messages(messages)
    out = [bos]
    last = None  # what the last rendered block was: "think", "tool", "tool_call", "tool_response"
    loop = list(messages)
    if enable_thinking or tools or (loop and loop[0]["role"] in ("system", "developer")):
        out.append("<|turn>system\n")
        if enable_thinking:
            out.append("<|think|>\n")
            last = "think"
        if loop and loop[0]["role"] in ("system", "developer"):
            out.append(_system_text(loop[0].get("content")))
            loop = loop[1:]
        if tools:
            out.extend(f"<|tool>{declaration(t)}<tool|>" for t in tools)
            last = "tool"
        out.append("<turn|>\n")
    last_user = max((i for i, m in enumerate(loop) if m["role"] == "user"), default=-1)
    previous_role = None
    for i, m in enumerate(loop):
        if m["role"] != "tool":
            last = None
            role = "model" if m["role"] == "assistant" else m["role"]
            if not (role == "model" and previous_role == "assistant"):
                out.append(f"<|turn>{role}\n")
            thought = m.get("reasoning") or m.get("reasoning_content")
            if thought and (i > last_user or (preserve_thinking and m.get("tool_calls"))):
                out.append(f"<|channel>thought\n{thought}\n<channel|>")
            calls = m.get("tool_calls") or []
            for tc in calls:
                fn = tc["function"]
                args = fn.get("arguments") or {}
                body = ",".join(f"{k}:" + argument(v, escape_keys=False) for k, v in _sorted(args))
                out.append(f"<|tool_call>call:{fn['name']}{{{body}}}<tool_call|>")
            if calls:
                last = "tool_call"
            answered = False
            if m.get("tool_responses"):
                for r in m["tool_responses"]:
                    out.append(tool_response(r.get("name") or "unknown", r.get("response")))
                answered, last = True, "tool_response"
            elif calls:
                for follow in loop[i + 1:]:
                    if follow["role"] != "tool":
                        break
                    name = follow.get("name") or "unknown"
                    for tc in calls:
                        if tc.get("id") == follow.get("tool_call_id"):
                            name = tc["function"]["name"]
                    body = follow.get("content")
                    if isinstance(body, list):
                        text = "".join(p.get("text") or "" for p in body if p.get("type") == "text")
                        out.append(tool_response(name, text) + "".join(MEDIA.get(p.get("type"), "") for p in body))
                    else:
                        out.append(tool_response(name, body))
                    answered, last = True, "tool_response"
            text = _content(m.get("content"), role == "model")
            out.append(text)
            following = next((f["role"] for f in loop[i + 1:] if f["role"] != "tool"), None)
            if last == "tool_call" and not answered:
                out.append("<|tool_response>")
            elif role == "model" and following == "assistant" and (not calls or answered):
                pass  # the next assistant message continues this model turn
            elif not (answered and not text.strip() and following is None):
                out.append("<turn|>\n")
        previous_role = m["role"]
    if add_generation_prompt:
        if last not in ("tool_response", "tool_call"):
            out.append("<|turn>model\n")
        elif last == "tool_response" and enable_thinking:
            out.append("<|channel>thought\n")
    return "".join(out)


# --- parsing a reply ---------------------------------------------------------------------------------------------
@dataclass
class Reply:
    content: str
    reasoning: str | None = None
    tool_calls: list[dict] = field(default_factory=list)  # OpenAI shape: {"id", "type", "function": {name, arguments}}


_CALL = re.compile(r"<\|tool_call>\s*call:\s*([\w.\-]+)\s*([({])(.*?)[)}]\s*<tool_call\|>", re.S)
_THOUGHT = re.compile(r"<\|channel>(?:thought)?\n?(.*?)(?:<channel\|>|$)", re.S)


class _Args:
    """A recursive-descent reader of the argument syntax: bare or quoted keys, <|"|>strings<|"|> (or plain
    "strings"), numbers, true/false/null, {maps} and [lists]."""

    def __init__(self, text: str):
        self.s, self.i = text, 0

    def ws(self):
        while self.i < len(self.s) and self.s[self.i].isspace():
            self.i += 1

    def peek(self, token: str) -> bool:
        self.ws()
        return self.s.startswith(token, self.i)

    def take(self, token: str):
        if not self.peek(token):
            raise ValueError(f"expected {token!r} at {self.i}")
        self.i += len(token)

    def string(self) -> str:
        quote = Q if self.peek(Q) else '"'
        self.take(quote)
        end = self.s.find(quote, self.i)
        if end < 0:
            raise ValueError("unterminated string")
        value, self.i = self.s[self.i:end], end + len(quote)
        return value

    def key(self) -> str:
        if self.peek(Q) or self.peek('"'):
            return self.string()
        m = re.compile(r"[^\s:=,{}\[\]()]+").match(self.s, self.i)
        if not m:
            raise ValueError(f"expected a key at {self.i}")
        self.i = m.end()
        return m.group()

    def pairs(self, close: str | None) -> dict:
        """key:value pairs up to `close` (None: the end of the text)."""
        out = {}
        while not (self.peek(close) if close else (self.ws() or self.i >= len(self.s))):
            if out:
                self.take(",")
            k = self.key()
            self.take(":") if self.peek(":") else self.take("=")  # paren calls may use key=value
            out[k] = self.value()
        return out

    def value(self):
        self.ws()
        if self.peek(Q) or self.peek('"'):
            return self.string()
        if self.peek("{"):
            self.take("{")
            v = self.pairs("}")
            self.take("}")
            return v
        if self.peek("["):
            self.take("[")
            items = []
            while not self.peek("]"):
                if items:
                    self.take(",")
                items.append(self.value())
            self.take("]")
            return items
        m = re.compile(r"[^\s,{}\[\]()]+").match(self.s, self.i)
        if not m:
            raise ValueError(f"expected a value at {self.i}")
        self.i = m.end()
        word = m.group()
        if word in ("true", "false", "null", "True", "False", "None"):
            return {"true": True, "True": True, "false": False, "False": False}.get(word)
        try:
            return json.loads(word)
        except json.JSONDecodeError:
            return word  # a bare word: kept as a string


def parse_arguments(body: str) -> dict:
    reader = _Args(body)
    args = reader.pairs(None)
    reader.ws()
    if reader.i != len(reader.s):
        raise ValueError(f"unexpected text at {reader.i}")
    return args


def parse_reply(text: str) -> Reply:
    """Split a reply (decoded with special tokens kept) into content, the thought channel and tool calls. A call
    whose arguments do not parse stays in the content, as text."""
    reasoning = None
    thought = _THOUGHT.search(text)
    if thought:
        reasoning = thought.group(1).strip() or None
        text = text[:thought.start()] + text[thought.end():]
    calls, kept, pos = [], [], 0
    for m in _CALL.finditer(text):
        try:
            args = parse_arguments(m.group(3))
        except ValueError:
            continue
        kept.append(text[pos:m.start()])
        pos = m.end()
        calls.append({"id": "call_" + uuid.uuid4().hex[:24], "type": "function",
                      "function": {"name": m.group(1), "arguments": json.dumps(args, ensure_ascii=False)}})
    kept.append(text[pos:])
    content = "".join(kept)
    for marker in ("<|tool_response>", "<turn|>", "<eos>"):
        content = content.split(marker)[0]
    return Reply(content.strip(), reasoning, calls)
