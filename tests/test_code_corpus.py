"""The generated function corpus: every variant verified, a stable held-out split, documents that tokenize the same
cut at any line end, the training batches built from it, and the clean-span draws of the objective."""

import collections
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dgemma.tasks import code_corpus as C
from dgemma.tasks.code_corpus.family import Family, Variant, check_family, passes
from dgemma.tokenizer import Tokenizer
from dgemma.training.data import CodeData, DataError
from dgemma.training.objective import sample_draws


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    """A tokenizer trained on the corpus by the script that makes the bundled one (at a smaller vocabulary)."""
    out = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    subprocess.run([sys.executable, "scripts/train_tokenizer.py", "--vocab-size", "1024", "--out", str(out)],
                   check=True, capture_output=True, cwd=Path(__file__).resolve().parent.parent)
    return Tokenizer.from_file(out)


def test_every_variant_of_every_family_passes_its_tests():
    fams = C.families()
    assert len(fams) >= 80
    assert collections.Counter(f.topic for f in fams).keys() >= {"numbers", "strings", "lists", "conversions"}
    assert C.verify() > 60_000  # raises naming the first variant that fails


def test_wrong_code_is_caught():
    fib = next(f for f in C.families() if f.key == "fibonacci")
    assert passes(Variant(fib, "fib", ("n",), None, False, 0).source(), "fib", fib)
    assert not passes("def fib(n):\n    return n\n", "fib", fib)  # wrong answers
    assert not passes("def fib(n):\n    return fib(n)\n", "fib", fib)  # RecursionError
    assert not passes("def fib(n)\n    return n\n", "fib", fib)  # SyntaxError
    assert not passes("def other(n):\n    return 0\n", "fib", fib)  # the name is missing
    broken = Family("broken", ("a1", "a2", "a3"), (("x",), ("y",)), None, ("d", "e"), ("return ARG0", "return 0"),
                    (((1,), 1), ((2,), 2), ((3,), 3), ((4,), 4)))
    assert check_family(broken) == [f"broken: body 1 with params {p} hinted=False fails its tests"
                                    for p in (("x",), ("y",))]


def test_held_out_split_is_stable_disjoint_and_covers_every_family():
    train, held = C.corpus("train"), C.corpus("heldout")
    n_train, n_held = sum(map(len, train)), sum(map(len, held))
    assert 0.08 < n_held / (n_train + n_held) < 0.12
    key = lambda v: (v.family.key, v.name, v.params, v.doc, v.hinted, v.impl)  # noqa: E731
    assert not {key(v) for v in train[0] + train[1]} & {key(v) for v in held[0] + held[1]}
    assert all(C.split_of(v) == "heldout" for v in held[0][:50])
    assert {v.family.key for v in held[0]} == {f.key for f in C.families()}
    assert all(v.name in C.GENERIC_NAMES for v in held[1]) and not any(v.name in C.GENERIC_NAMES for v in held[0])
    with pytest.raises(C.CorpusError, match="split must be"):
        C.corpus("test")


def test_a_document_tokenizes_the_same_cut_at_any_line_end(tok):
    """Prompts end at a line end (the `def` line, the docstring, ...): cut there, prefix and rest tokenize to
    exactly the tokens of the whole document, so a prompt such as "def fib(n):" is what training saw."""
    rng = random.Random(0)
    for _ in range(100):
        v, text = C.draw(rng)
        assert text.startswith(v.signature() + "\n") and f"\n\n\nassert {v.name}(" in text and text.endswith("\n")
        whole = tok.encode(text)
        for i in (i for i, ch in enumerate(text) if ch == "\n"):
            assert tok.encode(text[:i]) + tok.encode(text[i:]) == whole


def test_code_batches_are_prompt_and_rest_of_one_canvas_count(tok):
    """Each batch's responses span one canvas count, that of its first draw (no step is spent on EOS fill to a
    longer neighbour); both counts come up; nothing longer than max_canvases is drawn."""
    data = CodeData(tok, 32, "train", max_canvases=2)
    widths = set()
    for seed in range(6):
        ids, P, valid = data.batch(8, random.Random(seed))
        C = (ids.shape[1] - P) // 32
        assert ids.shape == (8, P + C * 32) and valid.shape == ids.shape and C in (1, 2)
        widths.add(C)
        for row, ok in zip(ids.tolist(), valid.tolist()):
            start = ok.index(True)
            assert row[start] == tok.bos_id and all(t == tok.pad_id for t in row[:start])
            rest = row[P:]
            end = rest.index(tok.eos_id)
            assert (C - 1) * 32 < end + 1 <= C * 32  # the response with its EOS needs all C canvases
            assert all(t == tok.eos_id for t in rest[end:])
            text = tok.decode(row[start + 1:P + end])
            assert text.startswith("def ") and "\n\n\nassert " in text
    assert widths == {1, 2}
    assert torch.equal(ids, CodeData(tok, 32, "train", max_canvases=2).batch(8, random.Random(5))[0])  # deterministic
    with pytest.raises(DataError, match="at least one canvas"):
        CodeData(tok, 32, "train", max_canvases=0)


def test_clean_span_draws_keep_one_span_and_default_draws_are_unchanged():
    model = type("M", (), {"config": type("C", (), {"canvas_length": 32, "vocab_size": 50_000})()})()
    ids = torch.randint(0, 50_000, (64, 4 + 64), generator=torch.Generator().manual_seed(1))
    plain = sample_draws(model, ids, 4, "all", generator=torch.Generator().manual_seed(0))
    again = sample_draws(model, ids, 4, "all", generator=torch.Generator().manual_seed(0), clean_span=0.0)
    assert all(torch.equal(plain[k], again[k]) for k in plain)
    d = sample_draws(model, ids, 4, "all", generator=torch.Generator().manual_seed(0), clean_span=1.0,
                     given={"t": torch.ones(64, 2)})
    kept = (d["noised"] == ids[:, 4:]).view(64 * 2, 32)  # t = 1: only the clean span (and 1 in 50,000) survives
    for row in kept.tolist():
        where = [i for i, k in enumerate(row) if k]
        assert where and where == list(range(where[0], where[-1] + 1))
