"""JSON Schema output on the canvas: whatever tokens the model puts in the allowed sets, the committed text is
valid JSON that the schema accepts, with the skeleton as clamped; the bundled model generates such output through
`model.generate(json_schema=...)`; unsupported or impossible schemas get one-line errors."""

from __future__ import annotations

import json
import random

import pytest
import torch

from dgemma import DiffusionGemma
from dgemma.bench.structured import SCHEMAS
from dgemma.commands.generate import BUNDLED_MODEL
from dgemma.config import get_preset
from dgemma.json_schema import SchemaError, Template, check, plan, validate
from dgemma.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.from_dir(BUNDLED_MODEL)


def fill(entries, rng: random.Random, vocab_size: int, filler: frozenset) -> list[int]:
    """What a model could commit: the clamped token, any token of a restricted set (half the time one that is not
    whitespace filler, so values get written), any token where free."""
    out = []
    for e in entries:
        if isinstance(e, int):
            out.append(e)
        elif e is None:
            out.append(rng.randrange(vocab_size))
        else:
            content = sorted(e - filler)
            out.append(rng.choice(content) if content and rng.random() < 0.5 else rng.choice(sorted(e)))
    return out


@pytest.mark.parametrize("L", [32, 64])
def test_any_tokens_the_sets_allow_commit_as_valid_json(tok, L):
    """The property the mode promises, over 22 schemas and random fillings: every committed canvas, repaired, decodes
    to JSON the schema accepts; clamped skeleton positions are committed as given; the output ends at the end token."""
    rng = random.Random(L)
    for schema in SCHEMAS:
        t = Template(schema, tok, L, tok.eos_id)
        c = t.constraints()
        assert c.tokens.shape == (t.canvases(), L)
        for _ in range(15):
            committed = []
            for k in range(t.canvases()):
                entries = [int(c.tokens[k, p]) if c.clamp[k, p] else
                           None if int(c.index[k, p]) == 0 else set(c.sets[c.index[k, p]].nonzero().flatten().tolist())
                           for p in range(L)]
                canvas = torch.tensor([fill(entries, rng, tok.vocab_size, t.vocab.filler)])
                fixed = c.repair(k, canvas)
                assert torch.equal(fixed[0][c.clamp[k]], c.tokens[k][c.clamp[k]])  # the skeleton stands
                committed += fixed[0].tolist()
            end = committed.index(tok.eos_id)
            assert end == t.length - 1
            text = tok.decode(committed[:end])
            value = json.loads(text)
            assert validate(value, schema) == [], (schema, text)


def test_the_validator_catches_what_it_checks():
    """The property test above is only as strong as `validate`: each breach is reported."""
    s = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 5},
                                          "s": {"type": "string", "maxLength": 2}, "e": {"enum": ["a", 1]},
                                          "xs": {"type": "array", "items": {"type": "boolean"}, "maxItems": 1}},
         "required": ["n"], "additionalProperties": False}
    assert validate({"n": 3, "s": "ab", "e": 1, "xs": [True]}, s) == []
    for bad in ({"n": 6}, {"n": 1.5}, {"s": "abc", "n": 1}, {"n": 1, "e": True}, {"n": 1, "e": "b"},
                {"n": 1, "xs": [True, False]}, {"n": 1, "xs": [1]}, {}, {"n": 1, "z": 0}, {"n": True}, [1]):
        assert validate(bad, s), bad


@pytest.mark.parametrize("schema, message", [
    ([1], "a schema must be a JSON object"),
    ({"type": "string", "pattern": "a+"}, "unsupported keyword 'pattern'"),
    ({"type": "object", "properties": {"a": {"anyOf": []}}}, r"\$.a: unsupported keyword 'anyOf'"),
    ({"enum": []}, "enum must be a non-empty list"),
    ({"type": "integer", "minimum": 5, "maximum": 1}, "minimum 5 is above maximum 1"),
    ({"type": "integer", "minimum": 1.2, "maximum": 1.8}, "no integer lies between"),
    ({"type": "array", "items": {"type": "integer"}, "minItems": 3, "maxItems": 1}, "minItems 3 is above maxItems 1"),
    ({"type": "object", "properties": {}, "required": ["x"]}, "required property 'x' is not in properties"),
    ({"type": "strnig"}, "unknown type 'strnig'"),
    ({"type": ["object", "null"], "properties": {}}, "scalar types only"),
    ({"type": "array"}, "an array needs items"),
    ({"description": "no type"}, "needs a type"),
    ({"type": "string", "maxLength": -1}, "maxLength must be a non-negative integer"),
    ({"type": "integer", "enum": ["a"]}, "no enum value has the type integer"),
])
def test_bad_schemas_get_one_line_errors(schema, message):
    with pytest.raises(SchemaError, match=message) as e:
        check(schema)
    assert "\n" not in str(e.value)


def test_a_layout_that_does_not_fit_names_both_numbers(tok):
    config = get_preset("tiny")  # canvas 32, context 4096
    schema = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}}}
    with pytest.raises(SchemaError, match=r"takes \d+ tokens, more than max_new_tokens 8"):
        plan(schema, tok, config, 5, max_new_tokens=8)
    with pytest.raises(SchemaError, match=r"after a prompt of 4090 tokens: \d+, more than the model's context of 4096"):
        plan(schema, tok, config, 4090)
    constraints, new = plan(schema, tok, config, 5)
    assert new == constraints.tokens.shape[0] * 32


def test_the_tail_after_the_end_token_is_clamped_to_pad(tok):
    """What follows the end token is committed as pad whatever the decoder writes there, so plan() clamps it: left
    free it is noise the sampler spends its steps on, and its flipping argmax kept every canvas from stopping (the
    enum schema on the bundled model took all 48 steps; clamped, 7)."""
    for schema in (SCHEMAS[3], SCHEMAS[10]):
        c, new = plan(schema, tok, get_preset("tiny"), 5)
        t = Template(schema, tok, 32, tok.eos_id)
        flat_clamp, flat_tokens = c.clamp.flatten(), c.tokens.flatten()
        assert flat_tokens[t.length - 1] == tok.eos_id and bool(flat_clamp[t.length - 1])
        assert bool(flat_clamp[t.length:].all()) and bool((flat_tokens[t.length:] == tok.pad_id).all())
        assert new == c.tokens.numel() and t.length < new


def test_generate_with_a_json_schema_on_the_bundled_model():
    """Through the documented entry point, with the tokenizer found beside the checkpoint: the generated text, up
    to the end token, parses and is valid; a schema longer than a canvas spans several."""
    model = DiffusionGemma.from_pretrained(BUNDLED_MODEL).eval()
    tok = model.tokenizer()
    prompt = torch.tensor([[tok.bos_id] + tok.encode("config = ")])
    for schema in (SCHEMAS[0], SCHEMAS[10]):
        out = model.generate(prompt, json_schema=schema, seed=0, max_denoising_steps=8)
        new = out.sequences[0, prompt.shape[1]:].tolist()
        text = tok.decode(new[:new.index(tok.eos_id)])
        assert validate(json.loads(text), schema) == [], text
    assert len(new) > model.config.canvas_length  # SCHEMAS[10] spans two canvases
    with pytest.raises(ValueError, match="not both"):
        model.generate(prompt, json_schema=SCHEMAS[0], constraints=Template(SCHEMAS[0], tok, 64, 1).constraints())
    with pytest.raises(ValueError, match="pass tokenizer="):
        DiffusionGemma.from_pretrained("tiny").generate(prompt, json_schema=SCHEMAS[0])


def test_the_benchmark_methods_on_one_schema():
    """Constrained diffusion and AR under the same mask are always valid; free decoding is measured, not forced."""
    from dgemma.bench.structured import METHODS, run_one
    model = DiffusionGemma.from_pretrained(BUNDLED_MODEL).eval()
    tok = model.tokenizer()
    results = {m: run_one(model, tok, SCHEMAS[4], m, 0, 4) for m in METHODS}
    assert results["constrained diffusion"][:2] == (True, True) and results["AR, same mask"][:2] == (True, True)
    assert results["AR, same mask"][2] == 1.0
    assert all(r[3] > 0 for r in results.values())
