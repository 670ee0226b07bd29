"""JSON objects without a schema (`response_format {"type": "json_object"}`): validate and repair.

With no schema there is no skeleton to clamp, so, as for closed tags (dgemma.markup), the output is checked after
it is decoded; from the first error on it is denoised again with what comes before it fixed, for a bounded number
of rounds, and what is still wrong after the last is cut at its first error and completed: an open string is
closed, a dangling key gets `null`, a number is cut back to its longest valid prefix, `tru` becomes `true`, a
trailing comma is dropped and the open arrays and objects are closed in order. The result is always one JSON
object (json.loads gives a dict).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
NUMBER_START = re.compile(r"-|-?(?:0|[1-9][0-9]*)(?:\.[0-9]*)?(?:[eE][+-]?[0-9]*)?")  # (lenient: "1.e" passes)
LITERALS = ("true", "false", "null")
ESCAPES = set('"\\/bfnrtu')
HEX = set("0123456789abcdefABCDEF")
WS = " \t\n\r"


@dataclass
class Scan:
    """How far `text` reads as the start of one JSON object. `error`: the offset of the first character that
    cannot continue it (None: none); `end`: the offset after the object's closing brace (None: still open);
    `stack`: the open containers ('{' or '['), outermost first; `state`: what comes next (start, key_or_end, key,
    colon, value, value_or_end, comma_or_end) or the token being read (key_string, string, number, literal);
    `token`: where that token starts; `comma`: where the last comma is; `escape`: where an escape the text
    cuts short begins."""
    error: int | None = None
    end: int | None = None
    stack: list[str] = field(default_factory=list)
    state: str = "start"
    token: int = 0
    comma: int = 0
    escape: int | None = None


def scan(text: str, start: int = 0, state: Scan | None = None) -> Scan:
    """`state`: the scan of text[:start], to go on from there (it is not changed)."""
    s = Scan() if state is None else dataclasses.replace(state, stack=list(state.stack), escape=None)
    i, n = start if state is None or state.escape is None else state.escape, len(text)
    while i < n:
        ch = text[i]
        if s.state in ("key_string", "string"):
            if ch == "\\":
                j = i + 1
                if j < n and text[j] not in ESCAPES or j + 1 < n and text[j] == "u" and any(
                        c not in HEX for c in text[j + 1:j + 5]):
                    s.error = i
                    return s
                step = 6 if j < n and text[j] == "u" else 2
                if i + step > n:
                    s.escape = i
                i += step
                continue
            if ch == '"':
                s.state = "colon" if s.state == "key_string" else "comma_or_end"
            elif ord(ch) < 0x20:  # a raw control character (a newline) inside a string
                s.error = i
                return s
            i += 1
            continue
        if s.state == "number":
            if ch in "0123456789+-.eE" and NUMBER_START.fullmatch(text, s.token, i + 1):
                i += 1
                continue
            if NUMBER.fullmatch(text, s.token, i) is None:  # the error is where its longest valid prefix ends
                m = NUMBER.match(text, s.token, i)
                s.error = m.end() if m else s.token
                return s
            s.state = "comma_or_end"
            continue
        if s.state == "literal":
            word = next((w for w in LITERALS if w.startswith(text[s.token:i + 1])), None)
            if word is None:
                if text[s.token:i] not in LITERALS:
                    s.error = i
                    return s
                s.state = "comma_or_end"
                continue
            i += 1
            continue
        if ch in WS:
            i += 1
            continue
        if s.state == "start":
            if ch != "{":
                s.error = i
                return s
            s.stack.append("{")
            s.state = "key_or_end"
        elif s.state in ("key_or_end", "key"):
            if ch == '"':
                s.state, s.token = "key_string", i
            elif ch == "}" and s.state == "key_or_end":
                if _pop(s, i):
                    return s
            else:
                s.error = i
                return s
        elif s.state == "colon":
            if ch != ":":
                s.error = i
                return s
            s.state = "value"
        elif s.state in ("value", "value_or_end"):
            if ch == "]" and s.state == "value_or_end":
                if _pop(s, i):
                    return s
            elif ch in "{[":
                s.stack.append(ch)
                s.state = "key_or_end" if ch == "{" else "value_or_end"
            elif ch == '"':
                s.state, s.token = "string", i
            elif ch == "-" or ch.isdigit():
                s.state, s.token = "number", i
                continue
            elif ch in "tfn":
                s.state, s.token = "literal", i
                continue
            else:
                s.error = i
                return s
        elif s.state == "comma_or_end":
            if ch == ",":
                s.state, s.comma = ("key" if s.stack[-1] == "{" else "value"), i
            elif ch == "}]"[s.stack[-1] == "["]:
                if _pop(s, i):
                    return s
            else:
                s.error = i
                return s
        i += 1
    if s.state == "literal" and text[s.token:] in LITERALS:
        s.state = "comma_or_end"
    return s


def _pop(s: Scan, i: int) -> bool:
    """Close the innermost container at offset i; True when that closed the object."""
    s.stack.pop()
    s.state = "comma_or_end"
    if not s.stack:
        s.end = i + 1
        return True
    return False


def next_tokens(tokenizer, text: str, progress: bool = False) -> list[int]:
    """The tokens whose text can come next after `text` in one JSON object (none once it is closed or wrong).
    `progress`: only those that are not all whitespace outside a string (where there are any)."""
    from .json_schema import vocabulary
    s = scan(text)
    if s.error is not None or s.end is not None:
        return []
    pieces = vocabulary(tokenizer).text
    ok = [i for i, piece in pieces.items() if scan(text + piece, len(text), s).error is None]
    if progress and s.state not in ("key_string", "string"):
        return [i for i in ok if pieces[i].strip(WS)] or ok
    return ok


def well_formed(text: str) -> bool:
    s = scan(text)
    return s.error is None and s.end is not None and not text[s.end:].strip()


def close(text: str) -> str:
    """The object `text` begins: its first error and anything after it dropped, the rest completed."""
    s = scan(text)
    if s.end is not None:
        return text[:s.end]
    head = text if s.error is None else text[:s.error]
    s = scan(head)
    if s.state == "start":
        return head + "{}"
    tail = ""
    if s.state in ("key_string", "string"):
        if s.escape is not None:
            head = head[:s.escape]
        tail = '"' + (": null" if s.state == "key_string" else "")
    elif s.state == "number":
        m = NUMBER.match(head, s.token)
        head, tail = (head[:m.end()], "") if m else (head[:s.token], "null")
    elif s.state == "literal":
        tail = next(w for w in LITERALS if w.startswith(head[s.token:]))[len(head) - s.token:]
    elif s.state == "colon":
        tail = ": null"
    elif s.state == "value":
        tail = "null" if s.stack[-1] == "{" else ""
        if s.stack[-1] == "[":
            head = head[:s.comma]
    elif s.state == "key":
        head = head[:s.comma]
    return head + tail + "".join("}" if c == "{" else "]" for c in reversed(s.stack))
