"""The bundled code model's corpus: small Python functions of many families, each verified against its tests.

A document is one function and an assert that calls it:

    def fib(n: int) -> int:
        \"\"\"Return the n-th Fibonacci number.\"\"\"
        a, b = 0, 1
        ...


    assert fib(10) == 55

Variants combine a family's names (or, for a quarter of the documents, a generic name such as `solve`, so that only
the docstring or the caller says what to write), parameter names, a docstring or none, type hints or none, and
its implementations. A stable hash of the variant puts one in ten into the held-out split, never trained on.
Every variant's source is run against its family's tests when the corpus is built.

    python -m dgemma.tasks.code_corpus            # build, verify, print counts and three documents
"""
from __future__ import annotations

import hashlib
import itertools
import random
import sys
from functools import cache

from .family import Family, Variant, check_family, passes

GENERIC_NAMES = ("solve", "f", "func", "compute", "helper", "calc")
GENERIC_SHARE = 0.25
HELD_OUT = 0.1


class CorpusError(ValueError):
    pass


@cache
def families() -> tuple[Family, ...]:
    from . import conversions, lists, numbers, strings
    fams = tuple(numbers.FAMILIES + conversions.FAMILIES + strings.FAMILIES + lists.FAMILIES)
    names = [n for f in fams for n in f.names]
    if len(set(names)) != len(names) or set(names) & set(GENERIC_NAMES):
        raise CorpusError("a function name is shared by two families or is generic")
    if len({f.key for f in fams}) != len(fams):
        raise CorpusError("two families share a key")
    return fams


def split_of(v: Variant) -> str:
    """'train' or 'heldout', from a hash of everything that makes the variant (stable across runs and machines)."""
    key = f"{v.family.key}|{v.name}|{','.join(v.params)}|{v.doc}|{v.hinted}|{v.impl}".encode()
    return "heldout" if int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2**64 < HELD_OUT else "train"


def variants(f: Family, generic: bool) -> list[Variant]:
    names = GENERIC_NAMES if generic else f.names
    hinted = (False, True) if f.hints else (False,)
    return [Variant(f, name, params, doc, h, impl)
            for name, params, doc, h, impl in itertools.product(
                names, f.params, (None,) + tuple(range(len(f.docs))), hinted, range(len(f.bodies)))]


@cache
def by_family(split: str) -> tuple[tuple[tuple[Variant, ...], tuple[Variant, ...]], ...]:
    """Per family, in order: (descriptive-name variants, generic-name variants) of one split."""
    if split not in ("train", "heldout"):
        raise CorpusError(f"split must be 'train' or 'heldout', got {split!r}")
    return tuple(tuple(tuple(v for v in variants(f, generic) if split_of(v) == split) for generic in (False, True))
                 for f in families())


def corpus(split: str) -> tuple[tuple[Variant, ...], tuple[Variant, ...]]:
    """(descriptive-name variants, generic-name variants) of one split."""
    parts = by_family(split)
    return tuple(v for d, _ in parts for v in d), tuple(v for _, g in parts for v in g)


@cache
def verify() -> int:
    """Run every variant's source against its tests; raise naming the first that fails. Returns the count."""
    problems = [p for f in families() for p in check_family(f)]
    if problems:
        raise CorpusError("; ".join(problems[:5]))
    n = 0
    for split in ("train", "heldout"):
        for v in itertools.chain(*corpus(split)):
            if not passes(v.source(), v.name, v.family):
                raise CorpusError(f"{v.family.key}: variant {v.name}{v.params} body {v.impl} fails its tests")
            n += 1
    return n


def document(v: Variant, test: int) -> str:
    return v.source() + "\n\n" + v.call(test)


def draw(rng: random.Random, split: str = "train") -> tuple[Variant, str]:
    """A random document of a split: a family uniformly, then a variant, then which test the caller shows."""
    parts = by_family(split)
    descriptive, generic = parts[rng.randrange(len(parts))]
    pool = generic if rng.random() < GENERIC_SHARE or not descriptive else descriptive
    v = pool[rng.randrange(len(pool))]
    return v, document(v, rng.randrange(len(v.family.tests)))


def cut(text: str, rng: random.Random) -> int:
    """Where a training example's prompt ends: after the `def` line (half the time), after the docstring, or at
    another line end; always just before a newline, which the tokenizer keeps as its own token."""
    ends = [i for i, ch in enumerate(text) if ch == "\n"][:-1]
    r = rng.random()
    if r < 0.5 or len(ends) < 2:
        return ends[0]
    if r < 0.65 and '"""' in text[ends[0]:ends[1]]:
        return ends[1]
    return rng.choice(ends)


def main() -> int:
    n = verify()
    for split in ("train", "heldout"):
        d, g = corpus(split)
        print(f"{split}: {len(d)} descriptive-name and {len(g)} generic-name variants")
    print(f"{len(families())} families, {n} variants verified")
    rng = random.Random(0)
    for _ in range(3):
        print("-" * 60 + "\n" + draw(rng)[1], end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
