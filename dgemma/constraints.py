"""Canvas constraints: what positions of the canvases must hold, for structured output and infilling.

A left-to-right grammar engine can only mask the next token. A canvas knows every position at once, so a
constraint is positional: a position is clamped (its token is given: the decoder sees it from the first step, it is
never resampled and always committed as given) or restricted to a set of allowed tokens (a logit mask before
sampling, so both the sample and the committed argmax come from the set). The engine applies both in its one step
function, eager and compiled, for any batch (`Engine.stream(..., constraints=...)`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch


@dataclass
class Constraints:
    """Constraints on the first C canvases of a generation, shared by every row; later canvases are free.

    tokens, clamp: (C, L) long and bool: clamped positions and their tokens.
    index: (C, L) long: each position's allowed set, a row of `sets`.
    sets: (S, V) bool: the allowed tokens of each set; set 0 allows every token.
    repair: called with (c, the (B, L) argmax canvas c) when canvas c is committed, returns the canvas to commit:
        where the positions' token sets cannot say what a valid output is (a value that ends before its slot
        does), the committed canvas is read and fixed (dgemma.json_schema). None commits the argmax as it is.
    """
    tokens: torch.Tensor
    clamp: torch.Tensor
    index: torch.Tensor
    sets: torch.Tensor
    repair: Callable[[int, torch.Tensor], torch.Tensor] | None = None

    @classmethod
    def build(cls, canvases: Sequence[Sequence[int | Iterable[int] | None]], L: int, V: int) -> "Constraints":
        """From one list per canvas of up to L entries, one per position: an int clamps the position to that
        token, a collection of ids restricts it to them, None (or a missing entry) leaves it free."""
        C = len(canvases)
        tokens, clamp = torch.zeros(C, L, dtype=torch.long), torch.zeros(C, L, dtype=torch.bool)
        index = torch.zeros(C, L, dtype=torch.long)
        sets: dict[frozenset, int] = {}
        for c, canvas in enumerate(canvases):
            if len(canvas) > L:
                raise ValueError(f"canvas {c} has {len(canvas)} constrained positions, more than the canvas "
                                 f"length {L}")
            for p, what in enumerate(canvas):
                if what is None:
                    continue
                if isinstance(what, int):
                    tokens[c, p], clamp[c, p] = what, True
                else:
                    key = frozenset(int(t) for t in what)
                    index[c, p] = sets.setdefault(key, len(sets) + 1)
        table = torch.ones(len(sets) + 1, V, dtype=torch.bool)
        for key, i in sets.items():
            table[i] = False
            if key:
                table[i, torch.tensor(sorted(key))] = True
        out = cls(tokens, clamp, index, table)
        out.validate(L, V)
        return out

    def validate(self, L: int, V: int) -> None:
        """One-line errors for constraints that do not fit the model or cannot be met."""
        C = self.tokens.shape[0]
        for name, t, dtype in (("tokens", self.tokens, torch.long), ("clamp", self.clamp, torch.bool),
                               ("index", self.index, torch.long)):
            if t.shape != (C, L) or t.dtype != dtype:
                raise ValueError(f"constraints.{name} must be a ({C}, {L}) {dtype} tensor, got "
                                 f"{tuple(t.shape)} {t.dtype}")
        if self.sets.dim() != 2 or self.sets.shape[1] != V or self.sets.dtype != torch.bool:
            raise ValueError(f"constraints.sets must be an (S, {V}) bool tensor, got {tuple(self.sets.shape)} "
                             f"{self.sets.dtype}")
        if bool(((self.tokens < 0) | (self.tokens >= V))[self.clamp].any()):
            raise ValueError(f"a clamped token is outside the vocabulary [0, {V})")
        if bool(((self.index < 0) | (self.index >= self.sets.shape[0])).any()):
            raise ValueError(f"constraints.index names a set outside [0, {self.sets.shape[0]})")
        empty = ~self.sets.any(-1)
        if bool(empty[self.index][~self.clamp].any()):
            raise ValueError("a position's allowed token set is empty: no token can be sampled there")

    def canvas(self, c: int, B: int, device) -> tuple[torch.Tensor, torch.Tensor, tuple] | None:
        """(tokens (B, L), clamp (B, L), (sets, index (B, L))) for canvas `c`, or None past the constrained
        ones. The mask pair is what `sample_step` and the compiled step take."""
        if c >= self.tokens.shape[0]:
            return None
        rows = (B, self.tokens.shape[1])
        return (self.tokens[c].to(device).expand(rows), self.clamp[c].to(device).expand(rows),
                (self.sets.to(device), self.index[c].to(device).expand(rows)))

    def start(self, c: int, current: torch.Tensor, fixed: torch.Tensor | None):
        """Canvas `c`'s starting state under the constraints, from its (B, L) tokens and clamp mask (None: none):
        (tokens with the clamped ones put in, the clamp mask with them added, the (sets, index) pair); past the
        constrained canvases the state is unchanged and the pair is None."""
        given = self.canvas(c, current.shape[0], current.device)
        if given is None:
            return current, fixed, None
        tokens, clamped, allowed = given
        return torch.where(clamped, tokens, current), clamped if fixed is None else fixed | clamped, allowed
