"""One family of small Python functions and the variants it renders to.

A family is one task (fibonacci, reverse a string, ...) written several ways. Bodies are dedented Python using
the placeholders FN (the function's own name, for recursion) and ARG0, ARG1, ... (its parameters); docstrings may
use ARG0, ARG1, ... too. A variant picks a name, a parameter tuple, a docstring or none, type hints or none and a
body; `render` turns it into source, and `passes` runs that source against the family's tests."""
from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass, field

_PLACEHOLDER = re.compile(r"\b(FN|ARG\d)\b")


@dataclass(frozen=True)
class Family:
    key: str                                  # unique id, e.g. "fibonacci"
    names: tuple[str, ...]                    # descriptive function names, none shared with another family
    params: tuple[tuple[str, ...], ...]       # alternative parameter-name tuples, all of one arity
    hints: tuple[str, ...] | None             # annotation of each parameter, then of the return value
    docs: tuple[str, ...]                     # one-line docstrings
    bodies: tuple[str, ...]                   # distinct implementations
    tests: tuple[tuple[tuple, object], ...]   # (arguments, expected result)
    topic: str = field(default="misc")

    @property
    def arity(self) -> int:
        return len(self.params[0])


@dataclass(frozen=True)
class Variant:
    family: Family
    name: str
    params: tuple[str, ...]
    doc: int | None      # index into family.docs, None: no docstring
    hinted: bool
    impl: int            # index into family.bodies

    def _fill(self, text: str) -> str:
        return _PLACEHOLDER.sub(lambda m: self.name if m.group(1) == "FN" else self.params[int(m.group(1)[3:])], text)

    def signature(self) -> str:
        """The `def` line, without a newline."""
        h = self.family.hints if self.hinted else None
        args = ", ".join(p if h is None else f"{p}: {h[i]}" for i, p in enumerate(self.params))
        return f"def {self.name}({args})" + ("" if h is None else f" -> {h[-1]}") + ":"

    def docstring(self) -> str:
        """The docstring line with its newline, or ''."""
        return "" if self.doc is None else f'    """{self._fill(self.family.docs[self.doc])}"""\n'

    def body(self) -> str:
        lines = self._fill(self.family.bodies[self.impl]).strip("\n").split("\n")
        return "".join(("    " + line if line.strip() else "") + "\n" for line in lines)

    def source(self) -> str:
        return self.signature() + "\n" + self.docstring() + self.body()

    def call(self, test: int = 0) -> str:
        """An assert line showing test `test`: the caller an infill sees after the function."""
        args, expected = self.family.tests[test]
        return f"assert {self.name}({', '.join(map(repr, args))}) == {expected!r}\n"


def same_value(got, expected) -> bool:
    if isinstance(expected, float) or isinstance(got, float):
        try:
            return math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-9)
        except TypeError:
            return False
    return type(got) is type(expected) and got == expected if isinstance(expected, (bool, type(None))) else got == expected


def passes(source: str, name: str, family: Family) -> bool:
    """Whether `source` defines `name` and it returns every test's expected value (False on any exception)."""
    scope: dict = {}
    try:
        exec(compile(source, "<candidate>", "exec"), scope)
        fn = scope[name]
        return all(same_value(fn(*copy.deepcopy(args)), expected) for args, expected in family.tests)
    except Exception:  # a candidate may fail in any way at all
        return False


def check_family(f: Family) -> list[str]:
    """What is wrong with a family definition (empty: nothing): every body of every variant must pass."""
    problems = []
    if len(f.names) < 3 or len(f.params) < 2 or len(f.docs) < 2 or len(f.bodies) < 2 or len(f.tests) < 4:
        problems.append(f"{f.key}: needs >= 3 names, 2 parameter tuples, 2 docs, 2 bodies, 4 tests")
    if len({len(p) for p in f.params}) != 1 or (f.hints is not None and len(f.hints) != f.arity + 1):
        problems.append(f"{f.key}: parameter tuples or hints of different lengths")
    for b in range(len(f.bodies)):
        for params in f.params:
            for hinted in (False, True) if f.hints else (False,):
                v = Variant(f, f.names[0], params, 0, hinted, b)
                if not passes(v.source(), v.name, f):
                    problems.append(f"{f.key}: body {b} with params {params} hinted={hinted} fails its tests")
    return problems
