"""Closed tags: XML and SVG output that is always well formed (`dgemma generate --format xml|svg`).

Where the structure is unknown there is nothing to clamp ahead of time, so this is validate-and-repair over the
canvas: the text is checked; from the first error on, the output is re-noised and denoised again with everything
before it fixed (it becomes part of the prompt), for a bounded number of rounds; whatever is still wrong after the
last round is cut at its first error and the open elements are closed in order, which is said out loud. Every
returned text is a well-formed document: one root element, tags closed in order, attribute values quoted, `<` and `&`
only where markup allows them.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

NAME = r"[A-Za-z_:][-A-Za-z0-9_.:]*"
ENT = r"&(?:[A-Za-z]+|#[0-9]+|#x[0-9A-Fa-f]+);"
VALUE = rf"\"(?:[^\"<&]|{ENT})*\"|'(?:[^'<&]|{ENT})*'"
OPEN = re.compile(rf"<({NAME})((?:\s+{NAME}\s*=\s*(?:{VALUE}))*)\s*(/?)>")
CLOSE = re.compile(rf"</({NAME})\s*>")
SKIP = re.compile(r"<!--(?:(?!--).)*-->|<\?(?:(?!\?>).)*\?>", re.S)  # comments, processing instructions
ENTITY = re.compile(ENT)


@dataclass
class Check:
    """`error`: the offset of the first character that cannot be part of a well-formed document (None: none);
    `end`: where the root element closes (None: still open); `open`: the names of the elements open at `error`
    (or at the end), outermost first."""
    error: int | None
    end: int | None
    open: list[str]


def check(text: str, root: str | None = None) -> Check:
    """Read `text` as the start of an XML document; `root`: the name the root element must have (svg)."""
    stack: list[str] = []
    i, n = 0, len(text)
    seen_root = False
    while i < n:
        if text[i] == "<":
            m = SKIP.match(text, i)
            if m:
                i = m.end()
                continue
            m = CLOSE.match(text, i)
            if m:
                if not stack or stack[-1] != m.group(1):
                    return Check(i, None, stack)
                stack.pop()
                i = m.end()
                if not stack:
                    return Check(None, i, stack)
                continue
            m = OPEN.match(text, i)
            if not m or (not stack and (seen_root or root is not None and m.group(1) != root)):
                return Check(i, None, stack)
            seen_root = True
            i = m.end()
            if not m.group(3):
                stack.append(m.group(1))
            elif not stack:
                return Check(None, i, stack)
            continue
        if text[i] == "&":
            m = ENTITY.match(text, i)
            if not m or not stack:
                return Check(i, None, stack)
            i = m.end()
            continue
        if not stack and not text[i].isspace():  # text outside the root element
            return Check(i, None, stack)
        i += 1
    return Check(None, None, stack)


def well_formed(text: str, root: str | None = None) -> bool:
    c = check(text, root)
    return c.error is None and c.end is not None and not text[c.end:].strip()


def close(text: str, root: str | None = None) -> str:
    """The longest prefix of `text` up to its first error (and not inside a tag), with its open elements closed in
    order; the root element `root` (or `<root>`) when not even that is open."""
    c = check(text, root)
    if c.error is None and c.end is not None:
        return text[:c.end]
    cut = len(text) if c.error is None else c.error
    head = text[:cut]
    last_lt = head.rfind("<")
    if last_lt > head.rfind(">"):  # a tag begun and never finished
        head = head[:last_lt]
    opened = check(head, root).open
    if not opened:  # no element begun: an empty root
        return head + f"<{root or 'root'}/>"
    return head + "".join(f"</{name}>" for name in reversed(opened))


def check_prompt(prompt: str, root: str | None = None) -> None:
    """A ValueError unless `prompt` can begin a well-formed document that is still open."""
    start = check(prompt, root)
    if start.error is not None:
        raise ValueError(f"the prompt is not well-formed markup at character {start.error}: "
                         f"{prompt[start.error:start.error + 20]!r}")
    if start.end is not None:
        raise ValueError("the prompt already closes its root element: nothing is left to generate")


def generate(engine, tok, prompt: str, cfg, seed: int | None, root: str | None = None, rounds: int = 3):
    """(the continuation of `prompt` that makes it a well-formed document, info). Each round denoises from the first
    error on with what comes before it fixed; `info`: rounds run, tokens per forward of the last, and whether the
    end had to be cut and closed (`closed`)."""
    import torch
    check_prompt(prompt, root)
    base = tok.encode(prompt, add_bos=True)
    stops = set(cfg.eos_token_id) | {cfg.pad_token_id}
    kept: list[int] = []
    for r in range(rounds + 1):
        budget = cfg.max_new_tokens - len(kept)
        if budget < 1:
            break
        out = engine.generate(torch.tensor([base + kept]), dataclasses.replace(cfg, max_new_tokens=budget),
                              seed=None if seed is None else seed + r)
        new = out.sequences[0, len(base) + len(kept):].tolist()
        tokens = kept + new[:next((i for i, t in enumerate(new) if t in stops), len(new))]
        text = tok.decode(tokens)
        c = check(prompt + text, root)
        info = {"rounds": r + 1, "tokens_per_forward": float(out.tokens_per_forward[0]), "closed": False}
        if c.error is None and c.end is not None:
            return text[:c.end - len(prompt)], info
        if c.error is None:  # still open where the tokens ran out
            break
        good = c.error - len(prompt)  # keep the tokens whose text lies wholly before the error
        kept = tokens[:max((k for k in range(len(tokens) + 1) if len(tok.decode(tokens[:k])) <= good), default=0)]
    info["closed"] = True
    return close(prompt + text, root)[len(prompt):], info
