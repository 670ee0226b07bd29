"""JSON Schema output on the canvas: the schema's skeleton is clamped, its values are slots the model fills.

A left-to-right grammar mask only ever knows the next token. Here the whole output's shape is laid out before the
first step: braces, keys, colons, commas and brackets are clamped positions (the decoder sees them from the start
and fills every value in parallel around them); each value is a slot of a few positions restricted to the tokens
its type can use (digits and sign for an integer, string characters, an enum's alternatives, whitespace filler).

A value can end before its slot does. A per-position token set cannot say "digits, then only filler", so when a
canvas is committed each slot's tokens are read by its type's automaton and repaired where it rejects them: the
string closes at its first quote or is closed in its last position, a number keeps its longest valid prefix and is
clamped into its bounds, an enum takes the alternative the slot matches best, and whatever follows a value becomes
filler. The committed text is therefore always valid JSON, valid against the schema.

Supported: `type` (one, or a list of scalar types such as ["string", "null"]), `properties`, `required`, `enum`,
`const`, `items`, `minItems`/`maxItems`, `minimum`/`maximum`, `maxLength`, nested objects and arrays, and the
annotations `title`, `description`, `$schema`, `$comment`, `default`, `examples`, `additionalProperties`. Every
declared property is written, required or not. An array of scalars has a variable count (the model may leave items
out past `minItems`, up to `maxItems`, or `minItems + DEFAULT_EXTRA_ITEMS` without one); an array of objects or
arrays has `max(minItems, min(maxItems, 2))` items. Other keywords are errors, never ignored.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field

import torch

from .constraints import Constraints

SCALARS = ("string", "integer", "number", "boolean", "null")
TYPES = SCALARS + ("object", "array")
KEYWORDS = {"type", "properties", "required", "enum", "const", "items", "minItems", "maxItems", "minimum", "maximum",
            "maxLength"}
ANNOTATIONS = {"title", "description", "$schema", "$comment", "default", "examples", "additionalProperties"}
STRING_WIDTH = 16      # token positions of a string without maxLength (its closing quote included)
NUMBER_WIDTH = 10      # of a number without both bounds
DEFAULT_EXTRA_ITEMS = 3
WHITESPACE = " \t\n\r"
NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
INTEGER = re.compile(r"-?(0|[1-9][0-9]*)")


class SchemaError(ValueError):
    """A schema that is not valid JSON Schema, uses unsupported keywords, or cannot be met."""


# --- the schema, checked ---------------------------------------------------------------------------------------
def check(schema, path: str = "$") -> None:
    """One-line SchemaErrors, naming the schema path, for anything this module cannot honour exactly."""
    if not isinstance(schema, dict):
        raise SchemaError(f"{path}: a schema must be a JSON object, got {type(schema).__name__}")
    unknown = sorted(set(schema) - KEYWORDS - ANNOTATIONS)
    if unknown:
        raise SchemaError(f"{path}: unsupported keyword {unknown[0]!r} (supported: {', '.join(sorted(KEYWORDS))})")
    types = type_list(schema, path)
    if "enum" in schema:
        if not isinstance(schema["enum"], list) or not schema["enum"]:
            raise SchemaError(f"{path}: enum must be a non-empty list")
        if "type" in schema and not any(matches_type(v, types) for v in schema["enum"]):
            raise SchemaError(f"{path}: no enum value has the type {schema['type']}")
    if "const" in schema and "type" in schema and not matches_type(schema["const"], types):
        raise SchemaError(f"{path}: const {schema['const']!r} does not have the type {schema['type']}")
    for key in ("minimum", "maximum"):
        if key in schema and (isinstance(schema[key], bool) or not isinstance(schema[key], (int, float))
                              or not math.isfinite(schema[key])):
            raise SchemaError(f"{path}: {key} must be a finite number")
    for key in ("minItems", "maxItems", "maxLength"):
        if key in schema and (isinstance(schema[key], bool) or not isinstance(schema[key], int) or schema[key] < 0):
            raise SchemaError(f"{path}: {key} must be a non-negative integer")
    if schema.get("minimum", -math.inf) > schema.get("maximum", math.inf):
        raise SchemaError(f"{path}: minimum {schema['minimum']} is above maximum {schema['maximum']}")
    if types == ["integer"] and "enum" not in schema and "const" not in schema:
        lo, hi = integer_bounds(schema)
        if lo is not None and hi is not None and lo > hi:
            raise SchemaError(f"{path}: no integer lies between minimum {schema['minimum']} and maximum "
                              f"{schema['maximum']}")
    if schema.get("minItems", 0) > schema.get("maxItems", math.inf):
        raise SchemaError(f"{path}: minItems {schema['minItems']} is above maxItems {schema['maxItems']}")
    props = schema.get("properties", {})
    if not isinstance(props, dict):
        raise SchemaError(f"{path}: properties must be an object")
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise SchemaError(f"{path}: required must be a list of property names")
    missing = [r for r in required if r not in props]
    if missing:
        raise SchemaError(f"{path}: required property {missing[0]!r} is not in properties")
    for name, sub in props.items():
        check(sub, f"{path}.{name}")
    if "items" in schema:
        check(schema["items"], f"{path}[]")
    elif "array" in types and "enum" not in schema and "const" not in schema:
        raise SchemaError(f"{path}: an array needs items")
    if "type" in schema and len(types) > 1 and not set(types) <= set(SCALARS):
        raise SchemaError(f"{path}: a list of types may combine scalar types only, got {types}")


def type_list(schema: dict, path: str) -> list[str]:
    t = schema.get("type")
    if t is None:
        if "enum" in schema or "const" in schema:
            return list(TYPES)
        if "properties" in schema:
            return ["object"]
        if "items" in schema:
            return ["array"]
        raise SchemaError(f"{path}: a schema needs a type (or enum, const, properties or items)")
    types = [t] if isinstance(t, str) else t
    if not isinstance(types, list) or not types or not all(isinstance(x, str) for x in types):
        raise SchemaError(f"{path}: type must be a type name or a non-empty list of them")
    bad = [x for x in types if x not in TYPES]
    if bad:
        raise SchemaError(f"{path}: unknown type {bad[0]!r} (one of {', '.join(TYPES)})")
    return types


def matches_type(value, types) -> bool:
    kinds = {"string": lambda v: isinstance(v, str), "null": lambda v: v is None,
             "boolean": lambda v: isinstance(v, bool),
             "integer": lambda v: isinstance(v, int) and not isinstance(v, bool) or isinstance(v, float) and v.is_integer(),
             "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
             "object": lambda v: isinstance(v, dict), "array": lambda v: isinstance(v, list)}
    return any(kinds[t](value) for t in types)


def integer_bounds(schema: dict) -> tuple[int | None, int | None]:
    lo, hi = schema.get("minimum"), schema.get("maximum")
    return (None if lo is None else math.ceil(lo)), (None if hi is None else math.floor(hi))


def json_equal(a, b) -> bool:
    """Equality as JSON has it: true is not 1, 1 is 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(json_equal, a, b))
    return a == b


def validate(value, schema: dict, path: str = "$") -> list[str]:
    """Where `value` breaks `schema` (the supported subset), one message per breach; [] when it is valid."""
    errors = []
    if "const" in schema and not json_equal(value, schema["const"]):
        errors.append(f"{path}: not the const {schema['const']!r}")
    if "enum" in schema and not any(json_equal(value, v) for v in schema["enum"]):
        errors.append(f"{path}: {value!r} is not in the enum")
    if "type" in schema and not matches_type(value, [schema["type"]] if isinstance(schema["type"], str)
                                             else schema["type"]):
        return errors + [f"{path}: {value!r} is not of type {schema['type']}"]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < schema.get("minimum", -math.inf) or value > schema.get("maximum", math.inf):
            errors.append(f"{path}: {value} is outside [{schema.get('minimum')}, {schema.get('maximum')}]")
    if isinstance(value, str) and len(value) > schema.get("maxLength", math.inf):
        errors.append(f"{path}: longer than maxLength {schema['maxLength']}")
    if isinstance(value, dict):
        errors += [f"{path}: missing required {r!r}" for r in schema.get("required", []) if r not in value]
        for k, v in value.items():
            if k in schema.get("properties", {}):
                errors += validate(v, schema["properties"][k], f"{path}.{k}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{path}: unexpected property {k!r}")
    if isinstance(value, list):
        if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", math.inf):
            errors.append(f"{path}: {len(value)} items, outside [{schema.get('minItems', 0)}, "
                          f"{schema.get('maxItems')}]")
        for i, v in enumerate(value):
            errors += validate(v, schema.get("items", {}), f"{path}[{i}]")
    return errors


# --- the vocabulary, classified once per tokenizer -------------------------------------------------------------
class Vocabulary:
    """Each token's text (a single-token decode; tokens that are special or a partial character are left out)
    and the token sets the slots draw on."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.size = tokenizer.vocab_size
        self.text: dict[int, str] = {}
        for i in range(self.size):
            t = tokenizer.decode([i])
            if t and "\ufffd" not in t:
                self.text[i] = t
        self.filler = frozenset(i for i, t in self.text.items() if not t.strip(WHITESPACE))
        spaces = [i for i in self.filler if self.text[i] == " "]
        if not spaces:
            raise SchemaError("the tokenizer has no single-space token to fill the end of a value slot with")
        self.space = min(spaces)
        self.quote = self.single('"')
        self.comma = self.single(",")
        self.string_chars = frozenset(i for i, t in self.text.items() if STRING_CHAR.fullmatch(t))
        self.closing = frozenset(i for i, t in self.text.items() if CLOSING.fullmatch(t))
        self.number_chars = frozenset(i for i, t in self.text.items() if NUMBER_CHARS.fullmatch(t))

    def single(self, ch: str) -> int:
        ids = self.tokenizer.encode(ch)
        if len(ids) != 1:
            raise SchemaError(f"the tokenizer has no single token for {ch!r}, which the JSON skeleton needs")
        return ids[0]

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)


STRING_CHAR = re.compile(r'[^"\\\x00-\x1f]+')
CLOSING = re.compile(r'[^"\\\x00-\x1f]*"[ \t\n\r]*')
NUMBER_CHARS = re.compile(r"[ \t\n\r]*[-+0-9.eE]+[ \t\n\r]*")


# --- slots: a value's positions, their allowed tokens, and the repair of what the model wrote ----------------
@dataclass
class Slot:
    width: int

    def entries(self, vocab: Vocabulary) -> list:
        """One entry per position for Constraints.build: an int clamps, a set restricts."""
        raise NotImplementedError

    def repair(self, ids: list[int], vocab: Vocabulary) -> list[int]:
        """`width` token ids that are a valid value followed by filler, as close to `ids` as the type allows."""
        raise NotImplementedError

    def pad(self, ids: list[int], vocab: Vocabulary) -> list[int]:
        return ids + [vocab.space] * (self.width - len(ids))


@dataclass
class StringSlot(Slot):
    """A string: its opening quote clamped, then characters, a closing quote wherever the model puts it, filler."""
    max_length: int | None = None

    def entries(self, vocab):
        rest = vocab.string_chars | vocab.closing | vocab.filler
        return [vocab.quote] + [rest] * (self.width - 1)

    def repair(self, ids, vocab):
        content = ""
        for i in ids[1:]:
            t = vocab.text.get(i, "")
            if i in vocab.closing:
                content += t[:t.index('"')]
                break
            if i not in vocab.string_chars:
                break
            content += t
        if self.max_length is not None:
            content = content[:self.max_length]
        while True:  # re-encode (the model's tokens are kept when nothing changed), shortened until it fits
            tokens = [vocab.quote] + vocab.encode(content) + [vocab.quote]
            if len(tokens) <= self.width:
                return self.pad(tokens, vocab)
            content = content[:-1]


@dataclass
class NumberSlot(Slot):
    """A JSON number (or integer), leading and trailing whitespace allowed, clamped into [lo, hi] at commit."""
    integer: bool = False
    lo: float | None = None
    hi: float | None = None

    def entries(self, vocab):
        return [vocab.number_chars | vocab.filler] * self.width

    def repair(self, ids, vocab):
        text = ""
        for i in ids:  # the slot's text up to the first token that is neither number characters nor filler
            if i not in vocab.number_chars and i not in vocab.filler:
                break
            text += vocab.text[i]
        m = (INTEGER if self.integer else NUMBER).match(text.lstrip(WHITESPACE))  # its longest valid prefix
        value = None if m is None else (int(m.group(0)) if self.integer else float(m.group(0)))
        if value is None:
            value = self.lo if self.lo is not None and self.lo > 0 else self.hi if self.hi is not None and self.hi < 0 \
                else 0
        if self.lo is not None and value < self.lo:
            value = self.lo
        if self.hi is not None and value > self.hi:
            value = self.hi
        if m is not None and value == (int(m.group(0)) if self.integer else float(m.group(0))):
            written = m.group(0)  # the model's own digits (0.50 stays 0.50)
        else:
            written = self.written(value, self.integer)
        tokens = vocab.encode(written)
        if len(tokens) > self.width:  # a long number of the model's in fewer, longer tokens than ours: a default
            tokens = vocab.encode(self.written(self.lo if self.lo is not None else self.hi if self.hi is not None
                                               and self.hi < 0 else 0, self.integer))
        return self.pad(tokens, vocab)

    @staticmethod
    def written(value, integer: bool) -> str:
        return str(int(value)) if integer or float(value).is_integer() else repr(float(value))


@dataclass
class ChoiceSlot(Slot):
    """One of a few literal values (an enum, true/false, null): the alternative the slot matches best."""
    alternatives: list[list[int]] = field(default_factory=list)

    def entries(self, vocab):
        if len(self.alternatives) == 1:
            return self.pad(list(self.alternatives[0]), vocab)
        return [frozenset(a[j] for a in self.alternatives if j < len(a)) | vocab.filler for j in range(self.width)]

    def repair(self, ids, vocab):
        best = max(self.alternatives, key=lambda a: sum(x == y for x, y in zip(a, ids)))  # first of equals
        return self.pad(list(best), vocab)


@dataclass
class UnionSlot(Slot):
    """A list of scalar types: the option whose first position holds the model's first token."""
    options: list[Slot] = field(default_factory=list)

    def entries(self, vocab):
        cols = [option_entries(o, vocab, self.width) for o in self.options]
        return [frozenset().union(*({e} if isinstance(e, int) else e for e in col)) for col in zip(*cols)]

    def repair(self, ids, vocab):
        for o in self.options:
            first = option_entries(o, vocab, self.width)[0]
            if ids[0] in ({first} if isinstance(first, int) else first):
                return self.pad(o.repair(ids[:o.width], vocab), vocab)
        return self.pad(self.options[0].repair(ids[:self.options[0].width], vocab), vocab)


def option_entries(slot: Slot, vocab, width: int) -> list:
    e = slot.entries(vocab)
    return e + [vocab.filler] * (width - len(e))


@dataclass
class OptionalItem(Slot):
    """An array item past minItems: a comma (none for a first item) and the item, or filler only. Once an item is
    left out, so are the array's later ones (`Template` keeps that across canvases)."""
    item: Slot | None = None
    lead: bool = True
    array: int = 0

    def entries(self, vocab):
        inner = self.item.entries(vocab)
        if self.lead:
            return [frozenset({vocab.comma}) | vocab.filler] + [self.loosen(e, vocab) for e in inner]
        return [self.loosen(e, vocab) for e in inner]

    @staticmethod
    def loosen(e, vocab):  # a clamped position of the item may be filler when the item is left out
        return (frozenset({e}) if isinstance(e, int) else e) | vocab.filler

    def present(self, ids, vocab) -> bool:
        if self.lead:
            return ids[0] == vocab.comma
        first = self.item.entries(vocab)[0]
        return ids[0] in ({first} if isinstance(first, int) else first - vocab.filler)

    def repair(self, ids, vocab):
        if not self.present(ids, vocab):
            return [vocab.space] * self.width
        if self.lead:
            return [vocab.comma] + self.item.repair(ids[1:], vocab)
        return self.item.repair(ids, vocab)


# --- the template: pieces laid out on canvases ------------------------------------------------------------------
@dataclass
class Piece:
    text: list[int] | None = None   # clamped skeleton tokens
    slot: Slot | None = None
    start: int = 0       # position in the generated tokens (set by Template.add)

    @property
    def width(self) -> int:
        return len(self.text) if self.text is not None else self.slot.width


class Template:
    """A schema laid out on canvases of `canvas_length`: `constraints` for the engine (its `repair` hook is this
    template's), and `length`, the generated tokens it takes, the end token included."""

    def __init__(self, schema: dict, tokenizer, canvas_length: int, end_id: int, vocab: Vocabulary | None = None,
                 pad_id: int | None = None):
        check(schema)
        self.L, self.pad_id = canvas_length, pad_id
        self.vocab = vocab or vocabulary(tokenizer)
        self.pieces: list[Piece] = []
        self.pos = 0
        self.arrays = 0
        self.lay(schema)
        self.add(Piece(text=[end_id]))
        self.length = self.pos
        self.closed: list[set[int]] = []  # per row: the arrays whose optional items have ended

    # layout
    def add(self, piece: Piece) -> None:
        if piece.width > self.L:
            raise SchemaError(f"a value of {piece.width} tokens does not fit in a canvas of {self.L}")
        if self.pos // self.L != (self.pos + piece.width - 1) // self.L:  # would cross a canvas: pad to the next
            gap = self.L - self.pos % self.L
            self.pieces.append(Piece(text=[self.vocab.space] * gap, start=self.pos))
            self.pos += gap
        piece.start = self.pos
        self.pieces.append(piece)
        self.pos += piece.width

    def text(self, s: str) -> None:
        self.add(Piece(text=self.vocab.encode(s)))

    def lay(self, schema: dict) -> None:
        types = type_list(schema, "$")
        if "const" in schema or "enum" in schema:
            values = [schema["const"]] if "const" in schema else schema["enum"]
            if all(not isinstance(v, (dict, list)) for v in values) or len(values) > 1:
                self.add(Piece(slot=self.choice(values)))
            else:
                self.text(json.dumps(values[0], ensure_ascii=False))
            return
        if types == ["object"]:
            self.text("{")
            for k, (name, sub) in enumerate(schema.get("properties", {}).items()):
                self.text((", " if k else "") + json.dumps(name, ensure_ascii=False) + ": ")
                self.lay(sub)
            self.text("}")
        elif types == ["array"]:
            self.array(schema)
        else:
            self.add(Piece(slot=self.scalar(schema, types)))

    def array(self, schema: dict) -> None:
        item, lo, hi = schema["items"], schema.get("minItems", 0), schema.get("maxItems")
        self.text("[")
        if "enum" in item or "const" in item or set(type_list(item, "$[]")) <= set(SCALARS):
            hi = lo + DEFAULT_EXTRA_ITEMS if hi is None else hi
            self.arrays += 1
            for k in range(hi):
                slot = self.scalar_or_choice(item)
                if k < lo:
                    if k:
                        self.text(", ")
                    self.add(Piece(slot=slot))
                else:
                    lead = k > 0
                    self.add(Piece(slot=OptionalItem(slot.width + lead, item=slot, lead=lead, array=self.arrays)))
        else:
            n = max(lo, min(2 if hi is None else hi, 2))
            for k in range(n):
                if k:
                    self.text(", ")
                self.lay(item)
        self.text("]")

    def scalar_or_choice(self, schema: dict) -> Slot:
        if "const" in schema or "enum" in schema:
            return self.choice([schema["const"]] if "const" in schema else schema["enum"])
        return self.scalar(schema, type_list(schema, "$[]"))

    def choice(self, values: list) -> ChoiceSlot:
        """A slot holding one of these JSON values, as they are written."""
        alts = [self.vocab.encode(json.dumps(v, ensure_ascii=False)) for v in values]
        return ChoiceSlot(max(map(len, alts)), alts)

    def scalar(self, schema: dict, types: list[str]) -> Slot:
        if len(types) > 1:
            options = [self.scalar(schema, [t]) for t in types]
            return UnionSlot(max(o.width for o in options), options)
        t = types[0]
        if t == "string":
            n = schema.get("maxLength")
            return StringSlot(min(STRING_WIDTH, n + 2) if n is not None else STRING_WIDTH, n)
        if t in ("integer", "number"):
            lo, hi = integer_bounds(schema) if t == "integer" else (schema.get("minimum"), schema.get("maximum"))
            # wide enough for either bound as repair writes it (a token holds at least one character)
            bounds = [len(NumberSlot.written(b, t == "integer")) for b in (lo, hi) if b is not None]
            if t == "integer" and len(bounds) == 2:
                width = max(bounds) + 1
            else:
                width = max([NUMBER_WIDTH] + [b + 1 for b in bounds])
            return NumberSlot(width, t == "integer", lo, hi)
        return self.choice([True, False] if t == "boolean" else [None])

    # what the engine takes
    def canvases(self) -> int:
        return -(-self.length // self.L)

    def constraints(self) -> Constraints:
        entries = [None] * (self.canvases() * self.L)
        for p in self.pieces:
            entries[p.start:p.start + p.width] = p.text if p.text is not None else p.slot.entries(self.vocab)
        if self.pad_id is not None:  # after the end token: pad, as committed (free, it would be noise to denoise)
            entries[self.length:] = [self.pad_id] * (len(entries) - self.length)
        rows = [entries[c * self.L:(c + 1) * self.L] for c in range(self.canvases())]
        return dataclasses.replace(Constraints.build(rows, self.L, self.vocab.size), repair=self.repair)

    def repair(self, c: int, canvas: torch.Tensor) -> torch.Tensor:
        """The committed canvas `c` (B, L) with every slot's tokens made valid (see the module's docstring)."""
        if c == 0:
            self.closed = [set() for _ in range(canvas.shape[0])]
        out = canvas.clone()
        rows = canvas.tolist()
        lo, hi = c * self.L, (c + 1) * self.L
        for b, row in enumerate(rows):
            for p in self.pieces:
                if p.slot is None or not lo <= p.start < hi:
                    continue
                ids = row[p.start - lo:p.start - lo + p.width]
                if isinstance(p.slot, OptionalItem) and p.slot.array in self.closed[b]:
                    fixed = [self.vocab.space] * p.width
                else:
                    fixed = p.slot.repair(ids, self.vocab)
                    if isinstance(p.slot, OptionalItem) and fixed[0] == self.vocab.space:
                        self.closed[b].add(p.slot.array)
                out[b, p.start - lo:p.start - lo + p.width] = torch.tensor(fixed)
        return out


def plan(schema: dict, tokenizer, config, prompt_len: int, max_new_tokens: int | None = None,
         context: int | None = None):
    """(Constraints, the new tokens to generate) for output valid against `schema` after a prompt of
    `prompt_len` tokens, within `context` positions (default: the model's); SchemaErrors for a schema that is not
    supported or whose layout does not fit."""
    L, context = config.canvas_length, context or config.max_position_embeddings
    template = Template(schema, tokenizer, L, tokenizer.eos_id, pad_id=tokenizer.pad_id)
    if max_new_tokens is not None and max_new_tokens < template.length:
        raise SchemaError(f"the schema's output takes {template.length} tokens, more than max_new_tokens "
                          f"{max_new_tokens}")
    need = template.canvases() * L
    if prompt_len + need > context:
        raise SchemaError(f"the schema's output takes {need} positions ({template.canvases()} canvases of {L}) "
                          f"after a prompt of {prompt_len} tokens: {prompt_len + need}, more than the model's "
                          f"context of {context}")
    return template.constraints(), need


_VOCABS: dict[int, Vocabulary] = {}


def vocabulary(tokenizer) -> Vocabulary:
    """The classified vocabulary of a tokenizer, made once per tokenizer object."""
    key = id(tokenizer)
    if key not in _VOCABS or _VOCABS[key].tokenizer is not tokenizer:
        _VOCABS[key] = Vocabulary(tokenizer)
    return _VOCABS[key]
