"""Structured output compared (issue #24): free decoding, constrained diffusion (dgemma.json_schema) and
autoregressive decoding of the same weights under the same per-position mask, on SCHEMAS; free decoding against
closed tags (dgemma.markup) on MARKUP_PROMPTS.

    python -m dgemma.bench.structured --save structured
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

SCHEMAS = [  # varied shapes: flat, nested, arrays, enums, bounded numbers, unions
    {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}, "required": ["name"]},
    {"type": "object", "properties": {"ok": {"type": "boolean"}}},
    {"type": "object", "properties": {"x": {"type": "number"}, "y": {"type": "number"}}},
    {"type": "object", "properties": {"color": {"enum": ["red", "green", "blue"]}}},
    {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 10}}},
    {"type": "object", "properties": {"t": {"type": "number", "minimum": -1.5, "maximum": 2.5}}},
    {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string", "maxLength": 8},
                                               "maxItems": 3}}},
    {"type": "object", "properties": {"xs": {"type": "array", "items": {"type": "integer"}, "minItems": 2,
                                             "maxItems": 4}}},
    {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 99}, "minItems": 1, "maxItems": 5},
    {"type": "object", "properties": {"user": {"type": "object", "properties": {
        "id": {"type": "integer"}, "email": {"type": "string", "maxLength": 20}}}}},
    {"type": "object", "properties": {"points": {"type": "array", "items": {
        "type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}}}, "minItems": 2,
        "maxItems": 2}}},
    {"type": "object", "properties": {"note": {"type": ["string", "null"], "maxLength": 10}}},
    {"type": "object", "properties": {"v": {"type": ["integer", "null"]}, "w": {"type": ["boolean", "string"]}}},
    {"type": "object", "properties": {"kind": {"const": "point"}, "at": {"type": "array", "items": {"type": "number"},
                                                                          "minItems": 2, "maxItems": 2}}},
    {"type": "object", "properties": {"level": {"enum": [1, 2, 3]}, "mode": {"enum": ["fast", "exact", None]}}},
    {"type": "string", "maxLength": 12},
    {"type": "integer", "minimum": -50, "maximum": 50},
    {"enum": ["yes", "no"]},
    {"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {"type": "object", "properties": {
        "c": {"type": "integer"}}}}}}},
    {"type": "object", "title": "Function", "description": "a function call",
     "properties": {"name": {"enum": ["add", "mul"]}, "args": {"type": "array", "items": {"type": "integer"},
                                                               "maxItems": 3}},
     "required": ["name", "args"], "additionalProperties": False},
    {"type": "object", "properties": {"empty": {"type": "object", "properties": {}}, "none": {"type": "null"},
                                      "flags": {"type": "array", "items": {"type": "boolean"}, "maxItems": 2}}},
    {"type": "object", "properties": {"rows": {"type": "array", "items": {"type": "array", "items": {
        "type": "integer", "minimum": 0, "maximum": 9}, "minItems": 3, "maxItems": 3}, "minItems": 2, "maxItems": 2}}},
]

METHODS = ("free diffusion", "constrained diffusion", "AR, same mask")
MARKUP_PROMPTS = ['<svg width="64" height="64">', '<svg viewBox="0 0 10 10"><g>', '<note><to>Ann</to>',
                  '<list><item id="1">', '<html><body><p>', '<svg><rect x="1" y="1" width="4" height="4"/>']


def first_json(text: str):
    """The JSON value the text opens with (what a client would try to read), or raise ValueError."""
    value, _ = json.JSONDecoder().raw_decode(text.lstrip())
    return value


def run_one(model, tok, schema: dict, method: str, seed: int, steps: int | None):
    """(parsed, schema-valid, tokens per forward, seconds) of one output."""
    from ..engine import Engine
    from ..json_schema import plan, validate
    prompt = f"# JSON matching {json.dumps(schema)}\nvalue = "
    ids = torch.tensor([[tok.bos_id] + tok.encode(prompt)])
    constraints, new = plan(schema, tok, model.config, ids.shape[1])
    kw = dict(eos_token_id=tok.stop_ids, pad_token_id=tok.pad_id)
    start = time.perf_counter()
    if method == "AR, same mask":
        out = Engine(model).generate_ar(ids, new, constraints=constraints, **kw)
    else:
        out = model.generate(ids, max_new_tokens=new, seed=seed, max_denoising_steps=steps,
                             constraints=constraints if method == "constrained diffusion" else None, **kw)
    seconds = time.perf_counter() - start
    gen = out.sequences[0, ids.shape[1]:].tolist()
    stops = set(tok.stop_ids) | {tok.pad_id}
    text = tok.decode(gen[:next((i for i, t in enumerate(gen) if t in stops), len(gen))])
    try:
        value = first_json(text)
    except ValueError:
        return False, False, float(out.tokens_per_forward[0]), seconds
    return True, validate(value, schema) == [], float(out.tokens_per_forward[0]), seconds


def run_markup(model, tok, prompt: str, rounds: int, seed: int, steps: int | None):
    """(well formed before any cut, well formed as returned, tokens per forward, seconds) of one markup output.
    With no rounds it is free diffusion: the text as decoded is what a caller would get, so valid = parsed."""
    from .. import markup
    from ..engine import Engine, GenerationConfig
    cfg = GenerationConfig.from_checkpoint(model.generation_defaults, max_new_tokens=2 * model.config.canvas_length,
                                           max_denoising_steps=steps, eos_token_id=tuple(tok.stop_ids),
                                           pad_token_id=tok.pad_id)
    root = "svg" if prompt.startswith("<svg") else None
    start = time.perf_counter()
    text, info = markup.generate(Engine(model), tok, prompt, cfg, seed, root, rounds)
    seconds = time.perf_counter() - start
    parsed = not info["closed"]
    valid = markup.well_formed(prompt + text, root) if rounds else parsed
    return parsed, valid, info["tokens_per_forward"], seconds


def summary(label: str, method: str, res: list[tuple]) -> list:
    """A table row from (parsed, valid, tokens per forward, seconds) per output; printed as it is made."""
    n = len(res)
    row = [label, method, n, f"{100 * sum(r[0] for r in res) / n:.0f}%", f"{100 * sum(r[1] for r in res) / n:.0f}%",
           f"{sum(r[2] for r in res) / n:.2f}", f"{sum(r[3] for r in res) / n:.2f}"]
    print(" | ".join(map(str, row)), file=sys.stderr)
    return row


def main(argv=None) -> int:
    from ..commands.generate import BUNDLED_MODEL
    from ..config import get_preset
    from ..model import DiffusionGemma
    from ..tokenizer import Tokenizer
    from .report import publish_table
    p = argparse.ArgumentParser(prog="python -m dgemma.bench.structured", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(BUNDLED_MODEL), help="checkpoint directory (default: the bundled model)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps per canvas (default: the checkpoint's)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--save", metavar="NAME", default=None, help="save the table as bench/results/NAME.json")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    trained = DiffusionGemma.from_pretrained(args.model).eval()
    tok = Tokenizer.from_dir(args.model)
    random_model = DiffusionGemma(get_preset("tiny").replace(vocab_size=trained.config.vocab_size,
                                                             canvas_length=trained.config.canvas_length)).eval()
    random_model.init_weights(torch.Generator().manual_seed(0))
    rows = []
    models = ((Path(args.model).name, trained), ("random tiny", random_model))
    for label, model in models:
        for method in METHODS:
            rows.append(summary(label, method, [run_one(model, tok, s, method, i, args.steps)
                                                for i, s in enumerate(SCHEMAS)]))
    for label, model in models:
        for rounds, method in ((0, "markup: free diffusion"), (3, "markup: closed tags (3 rounds)")):
            rows.append(summary(label, method, [run_markup(model, tok, prompt, rounds, i, args.steps)
                                                for i, prompt in enumerate(MARKUP_PROMPTS)]))
    cmd = "python -m dgemma.bench.structured " + " ".join(sys.argv[1:] if argv is None else argv)
    text = (f"{len(SCHEMAS)} JSON Schemas (flat, nested, arrays of scalars and of objects, enums, bounded numbers, "
            "type unions), one output each, prompted with the schema. Free diffusion: no constraints, the text's "
            "leading JSON value is read. Constrained: dgemma.json_schema (the skeleton clamped, value slots "
            "restricted, repaired at commit). AR, same mask: the encoder decodes left to right under the same "
            "per-position sets and repair, a token per forward. The random model is the tiny preset at the "
            "trained model's vocabulary and canvas. Markup rows (XML and SVG prompts): parses = well formed as "
            "decoded, before any cut; valid = well formed as returned (free diffusion returns the text as decoded); "
            "closed tags re-denoise from the first error up to 3 rounds, then cut there and close the open elements.")
    if args.save:
        publish_table(True, args.save, "Structured output: JSON Schema and closed tags", cmd,
                      ["model", "method", "outputs", "parses", "valid", "tokens per forward", "s per output"],
                      rows, text)
    else:
        for r in rows:
            print(" | ".join(map(str, r)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
