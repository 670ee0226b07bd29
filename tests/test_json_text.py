"""dgemma.json_text: every prefix of a JSON object reads without error, and whatever text comes, `close` returns
one JSON object that keeps the valid part."""

from __future__ import annotations

import json
import random

import pytest

from dgemma.json_text import close, scan, well_formed


def random_value(rng, depth=0):
    r = rng.random()
    if depth > 3 or r < 0.3:
        return rng.choice([1, -2.5, 1e-3, 0, 12345678901, True, False, None, 'a"b\\c\u00e9\n\t', "", "x" * 5])
    if r < 0.65:
        return {f"k{i}\\": random_value(rng, depth + 1) for i in range(rng.randint(0, 3))}
    return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]


def test_every_prefix_of_an_object_is_valid_and_closes_to_an_object():
    rng = random.Random(0)
    for _ in range(150):
        obj = {f"k{i}": random_value(rng) for i in range(rng.randint(0, 4))}
        text = json.dumps(obj, indent=rng.choice([None, 1]), ensure_ascii=rng.random() < 0.5)
        assert well_formed(text) and scan(text).end == len(text)
        assert close(text + ' trailing, "junk"') == text
        for k in range(len(text)):
            prefix = text[:k]
            assert scan(prefix).error is None, prefix
            closed = close(prefix)
            assert isinstance(json.loads(closed), dict), (prefix, closed)


def test_any_text_closes_to_an_object():
    rng = random.Random(1)
    alphabet = list('{}[]":,0123456789-.eE tfrueanl\\u\nab') + ['\\"', '"k": ', '{"a": ', "\\u00", "1e"]
    for _ in range(5000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        assert isinstance(json.loads(close(text)), dict), (text, close(text))


@pytest.mark.parametrize("text, error, closed", [
    ('{"a": 1, "b": tru', None, '{"a": 1, "b": true}'),
    ('{"a": [1, 2,', None, '{"a": [1, 2]}'),
    ('{"a": 1,', None, '{"a": 1}'),
    ('{"a', None, '{"a": null}'),
    ('{"a": "x\\u00', None, '{"a": "x"}'),
    ('{"a": 12.', None, '{"a": 12}'),
    ('{"a": -', None, '{"a": null}'),
    ('{"a": 1 "b": 2}', 8, '{"a": 1 }'),
    ('{"a": "line\nbreak"}', 11, '{"a": "line"}'),
    ('{"a": 01}', 7, '{"a": 0}'),
    ('{"a": 1]', 7, '{"a": 1}'),
    ('[1, 2]', 0, '{}'),
    ('  {"a": {"b": []}}', None, '  {"a": {"b": []}}'),
])
def test_errors_and_repairs(text, error, closed):
    assert scan(text).error == error
    assert close(text) == closed
    assert isinstance(json.loads(closed), dict)


def test_next_tokens_are_exactly_the_valid_continuations():
    """With the bundled tokenizer: along a valid object, the token of each next character is allowed, and every
    allowed token keeps the text valid; a single quote (a Python dict) never follows `{`."""
    from dgemma.json_schema import vocabulary
    from dgemma.json_text import next_tokens
    from dgemma.tokenizer import Tokenizer, default_tokenizer_path
    tok = Tokenizer.from_file(default_tokenizer_path())
    pieces = vocabulary(tok).text
    single = {t: i for i, t in pieces.items() if len(t) == 1}
    text = json.dumps({"a": [1, -2.5e3, True, None], "b\\": {"c": "d\u00e9"}})
    for k in range(1, len(text)):
        allowed = set(next_tokens(tok, text[:k]))
        if text[k] in single:
            assert single[text[k]] in allowed, (text[:k], text[k])
        assert all(scan(text[:k] + pieces[i]).error is None for i in allowed)
    assert single["'"] not in set(next_tokens(tok, "{")) and single['"'] in set(next_tokens(tok, "{"))
    assert next_tokens(tok, text) == [] and next_tokens(tok, "{'") == []
