"""Sudoku as a block-diffusion task: parsing, exact and singles-only solvers,
a unique-solution puzzle generator, and the token encoding the model sees.

A grid is a row-major list of 81 ints, 0 for a blank and 1-9 for a digit.
Rows, columns and boxes are numbered 1-9 in messages; boxes run left to
right, top to bottom.

Token ids, a private vocabulary of ``VOCAB_SIZE = 832`` (not Gemma's):

* 0 PAD (also the placeholder for unclamped canvas cells), 1 EOS, 2 BOS
* 3-11 the digits 1-9 on the canvas: digit ``d`` is token ``d + 2``
* 12-15 unused
* 16-825 prompt cells, tagged with their position: cell ``i`` (0-80) holding
  ``d`` (0 for a blank) is token ``16 + 10 * i + d``
* 826-831 unused, so the embedding table has a round size

The prompt is ``[BOS]`` followed by the 81 cells; the target is the 81 solution
digits. Why tag the prompt cells: the architecture has no absolute position
embedding, and a cell's row, column and box are functions of its absolute
position, so an untagged grid makes the model first learn to count. Tagged, a
canvas cell finds its own prompt cell at the fixed offset 81 (easy for RoPE) and
with it where it sits in the grid. A side effect: the uniform noise of block
diffusion now lands mostly on prompt-cell tokens, which are never a valid
canvas token, so noised cells are easy to tell apart from real digits.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Iterable

PAD, EOS, BOS = 0, 1, 2
DIGIT_OFFSET = 2
CELL_OFFSET = 16  # prompt cell i holding d (0: blank) is CELL_OFFSET + 10 * i + d
VOCAB_SIZE = 832

KINDS = ("singles", "search")
MIN_GIVENS = 17  # no sudoku with fewer givens has a unique solution
GENERATE_ATTEMPTS = 4  # digs per puzzle when chasing a low givens target
_MAX_GRIDS = 100  # grids tried before giving up on an unreachable kind/givens pair

ROWS = tuple(tuple(range(r * 9, r * 9 + 9)) for r in range(9))
COLS = tuple(tuple(range(c, 81, 9)) for c in range(9))
BOXES = tuple(tuple((br * 3 + i) * 9 + bc * 3 + j for i in range(3) for j in range(3))
              for br in range(3) for bc in range(3))
UNITS = ROWS + COLS + BOXES
_CELL_UNITS = tuple((i // 9, 9 + i % 9, 18 + i // 27 * 3 + i % 9 // 3) for i in range(81))
PEERS = tuple(tuple(sorted({p for u in _CELL_UNITS[i] for p in UNITS[u]} - {i})) for i in range(81))

_ALL = 0x1FF  # candidate bitmask: bit d-1 set means digit d is still possible
_POPCOUNT = tuple(bin(m).count("1") for m in range(512))
_DIGITS = frozenset(range(1, 10))


class SudokuError(ValueError):
    """A grid that is malformed or breaks the rules before any solving starts."""


@dataclass
class Puzzle:
    """A generated puzzle; `kind` is its difficulty() label."""

    puzzle: list[int]
    solution: list[int]
    givens: int
    kind: str


# --------------------------------------------------------------------------- text


def parse_grid(text: str) -> list[int]:
    """Read 81 cells ('1'-'9', '0' or '.' for blank; whitespace ignored).

    Conflicting givens are rejected here so that a typo is reported as such
    instead of surfacing later as an "unsolvable" puzzle.
    """
    cells = []
    for pos, ch in enumerate(text):
        if ch.isspace():
            continue
        if ch in "0.":
            cells.append(0)
        elif "1" <= ch <= "9":
            cells.append(int(ch))
        else:
            raise SudokuError(f"invalid character {ch!r} at index {pos}; expected 1-9, 0 or '.'")
    if len(cells) != 81:
        raise SudokuError(f"expected 81 cells, found {len(cells)}")
    conflict = _find_conflict(cells)
    if conflict:
        raise SudokuError(conflict)
    return cells


def parse_puzzle(text: str) -> list[int]:
    """`parse_grid`, and a puzzle with no solution is refused too (the CLI and the server both ask this)."""
    cells = parse_grid(text)
    if solve(cells) is None:
        raise SudokuError("this puzzle has no solution")
    return cells


def to_string(cells: Iterable[int]) -> str:
    """81 characters, '.' for blanks; parse_grid reads it back."""
    return "".join(str(d) if d else "." for d in _as_cells(cells))


def format_grid(cells: Iterable[int]) -> str:
    """Nine text rows with box separators, for logs and the CLI."""
    text = to_string(cells)
    lines = []
    for r in range(9):
        row = text[r * 9 : r * 9 + 9]
        lines.append(" | ".join(" ".join(row[b : b + 3]) for b in (0, 3, 6)))
        if r in (2, 5):
            lines.append("------+-------+------")
    return "\n".join(lines)


def _as_cells(cells: Iterable[int]) -> list[int]:
    """Copy any sequence (list, tuple, numpy array) into a checked list of ints."""
    out = [int(d) for d in cells]
    if len(out) != 81:
        raise SudokuError(f"expected 81 cells, found {len(out)}")
    if not all(0 <= d <= 9 for d in out):
        raise SudokuError("cell values must be 0 (blank) or 1-9")
    return out


def _find_conflict(cells: list[int]) -> str | None:
    """Describe the first digit given twice in one unit, or None."""
    for name, units in (("row", ROWS), ("column", COLS), ("box", BOXES)):
        for number, unit in enumerate(units, 1):
            seen = set()
            for i in unit:
                d = cells[i]
                if d in seen:
                    return f"conflicting givens: digit {d} appears twice in {name} {number}"
                if d:
                    seen.add(d)
    return None


def is_valid_solution(solution: Iterable[int], puzzle: Iterable[int] | None = None) -> bool:
    """True if `solution` is a complete legal grid that keeps every given of `puzzle`.

    A wrong-length `solution` is False, not an error: this scores model output.
    """
    cells = [int(d) for d in solution]
    if len(cells) != 81 or any({cells[i] for i in unit} != _DIGITS for unit in UNITS):
        return False
    return puzzle is None or all(not g or g == d for g, d in zip(_as_cells(puzzle), cells))


# ------------------------------------------------------------------------ solvers
#
# State is a list of 81 candidate bitmasks. Propagation applies exactly the two
# singles rules, so the same routine is the singles-only solver and the pruning
# step of the exact search.


def _propagate(masks: list[int], queue: list[int], dirty: set[int]) -> bool:
    """Apply naked and hidden singles to a fixpoint, in place.

    `queue` holds solved cells whose digit has not yet been removed from their
    peers; `dirty` the indices (into UNITS) of units whose candidates changed
    since they were last scanned for hidden singles. Tracking them spares the
    search a full 27-unit rescan after each guess. Returns False on a
    contradiction (a cell or a unit digit with no place left).
    """
    while True:
        while queue:
            i = queue.pop()
            bit = masks[i]
            for p in PEERS[i]:
                m = masks[p]
                if m & bit:
                    m ^= bit
                    if not m:
                        return False
                    masks[p] = m
                    dirty.update(_CELL_UNITS[p])
                    if not m & (m - 1):  # naked single
                        queue.append(p)
        if not dirty:
            return True
        scan, dirty = dirty, set()
        for u in scan:
            once = twice = solved = 0
            for i in UNITS[u]:
                m = masks[i]
                if m & (m - 1):
                    twice |= once & m
                    once |= m
                else:
                    solved |= m
            if once | solved != _ALL:
                return False
            hidden = once & ~twice & ~solved  # open digits with exactly one place
            if hidden:
                for i in UNITS[u]:
                    h = masks[i] & hidden
                    if h:
                        if h & (h - 1):  # one cell is the only place for two digits
                            return False
                        masks[i] = h
                        dirty.update(_CELL_UNITS[i])
                        queue.append(i)


def _closure(cells: list[int], narrow: tuple[int, int] | None = None) -> list[int] | None:
    """Candidate masks after singles propagation from the givens, None if contradictory.

    Blank cells start from their row/column/box leftovers rather than from
    propagating every given to its 20 peers, which is the generator's hot path.
    `narrow=(cell, mask)` restricts one blank cell's candidates up front.
    """
    used = [0] * 27  # digits placed in each unit, indexed like UNITS
    for i, d in enumerate(cells):
        if d:
            bit = 1 << (d - 1)
            for u in _CELL_UNITS[i]:
                if used[u] & bit:
                    return None
                used[u] |= bit
    narrow_cell, narrow_mask = narrow or (-1, _ALL)
    masks, queue = [], []
    for i, d in enumerate(cells):
        if d:
            masks.append(1 << (d - 1))
            continue
        r, c, b = _CELL_UNITS[i]
        m = _ALL & ~(used[r] | used[c] | used[b])
        if i == narrow_cell:
            m &= narrow_mask
        if not m:
            return None
        if not m & (m - 1):
            queue.append(i)
        masks.append(m)
    return masks if _propagate(masks, queue, set(range(27))) else None


def _search(masks: list[int], limit: int, found: list, rng: random.Random | None = None) -> None:
    """Depth-first search on the most constrained cell, collecting up to `limit` solutions.

    With `rng` the digits are tried in random order, which turns the solver into
    a generator of random full grids.
    """
    best, best_n = -1, 10
    for i, m in enumerate(masks):
        if m & (m - 1) and _POPCOUNT[m] < best_n:
            best, best_n = i, _POPCOUNT[m]
            if best_n == 2:
                break
    if best < 0:
        found.append(masks)
        return
    m = masks[best]
    bits = [1 << d for d in range(9) if m >> d & 1]
    if rng is not None:
        rng.shuffle(bits)
    for bit in bits:
        child = masks.copy()
        child[best] = bit
        if _propagate(child, [best], set(_CELL_UNITS[best])):
            _search(child, limit, found, rng)
            if len(found) >= limit:
                return


def _digits(masks: list[int]) -> list[int]:
    return [m.bit_length() for m in masks]


def _solutions(cells: list[int], limit: int, narrow: tuple[int, int] | None = None) -> list:
    """Up to `limit` solutions, as candidate masks (see _closure for `narrow`)."""
    masks = _closure(cells, narrow)
    found: list = []
    if masks is not None:
        _search(masks, limit, found)
    return found


def count_solutions(cells: Iterable[int], limit: int = 2) -> int:
    """Number of solutions, counting stops at `limit` (2 answers "is it unique?")."""
    return len(_solutions(_as_cells(cells), limit))


def solve(cells: Iterable[int]) -> list[int] | None:
    """One solution (the first found), or None if there is none."""
    found = _solutions(_as_cells(cells), 1)
    return _digits(found[0]) if found else None


def solve_with_singles(cells: Iterable[int]) -> list[int] | None:
    """The solution if naked and hidden singles alone complete the grid, else None."""
    masks = _closure(_as_cells(cells))
    if masks is None or any(m & (m - 1) for m in masks):
        return None
    return _digits(masks)


def _is_singles(cells: Iterable[int]) -> bool:
    return solve_with_singles(cells) is not None


def difficulty(cells: Iterable[int]) -> str:
    """"singles" if singles alone solve the puzzle, "search" if guessing is needed."""
    return "singles" if _is_singles(cells) else "search"


# ---------------------------------------------------------------------- generator


def _givens(cells: list[int]) -> int:
    return 81 - cells.count(0)


def _has_other_solution(puzzle: list[int], solution: list[int], cell: int) -> bool:
    """Whether blanking `cell` of a unique puzzle let in a second solution.

    Any other solution must differ from `solution` at `cell`, so ban that digit
    there and look for one: cheaper than count_solutions(puzzle) == 2, which
    first re-derives the known solution.
    """
    return bool(_solutions(puzzle, 1, (cell, _ALL ^ 1 << (solution[cell] - 1))))


def _naked_single(puzzle: list[int], cell: int, digit: int) -> bool:
    """Whether the givens among `cell`'s peers rule out every digit but `digit`."""
    seen = 1 << (digit - 1)
    for p in PEERS[cell]:
        if puzzle[p]:
            seen |= 1 << (puzzle[p] - 1)
    return seen == _ALL


def _dig(puzzle: list[int], solution: list[int], order: list[int],
         keep: Callable[[list[int], int], bool], done: Callable[[list[int]], bool]) -> None:
    """Blank the cells in `order` one by one, undoing blanks that break
    `keep(puzzle, cell)`, until `done(puzzle)`. A cell whose peers force its
    digit skips `keep`: the puzzle is logically unchanged (most cells, early on).
    """
    if done(puzzle):
        return
    for i in order:
        puzzle[i] = 0
        if _naked_single(puzzle, i, solution[i]) or keep(puzzle, i):
            if done(puzzle):
                return
        else:
            puzzle[i] = solution[i]


def _make_puzzle(rng: random.Random, solution: list[int], givens: int | None,
                 kind: str | None) -> list[int] | None:
    """One digging attempt on `solution`; None if it cannot produce `kind`.

    The result keeps more than `givens` givens when the random order reaches a
    minimal puzzle (no removable cell) first.
    """
    order = list(range(81))
    rng.shuffle(order)
    puzzle = solution.copy()
    target = MIN_GIVENS if givens is None else givens

    def reached(p: list[int]) -> bool:
        return _givens(p) <= target

    def unique(p: list[int], cell: int) -> bool:
        return not _has_other_solution(p, solution, cell)

    if kind == "singles":
        # Singles-solvable implies unique, and removing a given never makes a
        # puzzle easier, so digging under this rule stays "singles" throughout.
        _dig(puzzle, solution, order, lambda p, _: _is_singles(p), reached)
        return puzzle
    if kind is None:
        _dig(puzzle, solution, order, unique, reached)
        return puzzle
    # "search": dig until the puzzle needs search at or below the target, then
    # add givens back while it still needs search. Adding givens never makes a
    # puzzle harder, so this climbs back to the target without losing the label.
    _dig(puzzle, solution, order, unique, lambda p: reached(p) and not _is_singles(p))
    if _is_singles(puzzle):
        return None
    for i in order:
        if _givens(puzzle) >= target:
            break
        if not puzzle[i]:
            puzzle[i] = solution[i]
            if _is_singles(puzzle):
                puzzle[i] = 0
    return puzzle if _givens(puzzle) >= target else None


def generate_puzzle(rng: random.Random, givens: int | None = None,
                    kind: str | None = None) -> Puzzle:
    """A random puzzle with a unique solution, deterministic in `rng`'s state.

    `givens=None` digs until no further cell can be removed (a minimal puzzle).
    Low targets (about 24 or fewer) are not always reachable: after
    GENERATE_ATTEMPTS digs the puzzle with the fewest givens is kept, so check
    `Puzzle.givens`. `kind` ("singles" or "search") forces the label.
    """
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS} or None, got {kind!r}")
    if givens is not None and not MIN_GIVENS <= givens <= 81:
        raise ValueError(f"givens must be in [{MIN_GIVENS}, 81], got {givens}")
    best, kept = None, 0
    for _ in range(_MAX_GRIDS):
        found: list = []
        _search([_ALL] * 81, 1, found, rng)  # a random full grid
        solution = _digits(found[0])
        puzzle = _make_puzzle(rng, solution, givens, kind)
        if puzzle is None:
            continue
        kept += 1
        if best is None or _givens(puzzle) < best.givens:
            best = Puzzle(puzzle, solution, _givens(puzzle), difficulty(puzzle))
        if givens in (None, best.givens) or kept == GENERATE_ATTEMPTS:
            return best
    if best is None:
        raise SudokuError(f"no {kind} puzzle with {givens} givens found in {_MAX_GRIDS} grids")
    return best


def generate_dataset(n: int, seed: int, kind: str | None = None,
                     givens_range: tuple[int, int] = (22, 40)) -> list[Puzzle]:
    """`n` puzzles, each with a givens target drawn uniformly from `givens_range`
    (inclusive; see generate_puzzle for low targets). Same seed, same list."""
    rng = random.Random(seed)
    return [generate_puzzle(rng, rng.randint(*givens_range), kind) for _ in range(n)]


# ----------------------------------------------------------------------- encoding


def encode_prompt(puzzle: Iterable[int]) -> list[int]:
    """[BOS] + one position-tagged token per cell (see the module docstring)."""
    return [BOS] + [CELL_OFFSET + 10 * i + d for i, d in enumerate(_as_cells(puzzle))]


def decode_prompt(ids: Iterable[int]) -> list[int]:
    """The puzzle back from encode_prompt's cells (without the BOS)."""
    return [(int(t) - CELL_OFFSET) % 10 for t in ids]


def encode_solution(solution: Iterable[int]) -> list[int]:
    """81 digit tokens; the grid must be full."""
    cells = _as_cells(solution)
    if 0 in cells:
        raise SudokuError("a solution cannot contain blanks")
    return [d + DIGIT_OFFSET for d in cells]


def decode_solution(ids: Iterable[int]) -> list[int]:
    """Digits from canvas tokens; any non-digit token (PAD, a prompt cell, ...) becomes 0 so the
    result still scores as invalid rather than raising."""
    return [t - DIGIT_OFFSET if DIGIT_OFFSET < t <= 9 + DIGIT_OFFSET else 0 for t in map(int, ids)]


def clamp_canvas(puzzle: Iterable[int]) -> tuple[list[int], list[bool]]:
    """The 81-cell canvas the sampler starts from: givens placed and clamped
    (True) so denoising can never change them, blanks PAD and free (False)."""
    cells = _as_cells(puzzle)
    return [d + DIGIT_OFFSET if d else PAD for d in cells], [d != 0 for d in cells]
