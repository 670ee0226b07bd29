"""Tests for dgemma.tasks.sudoku.

Uniqueness and difficulty labels are cross-checked against deliberately naive
re-implementations written here (set-based, cell-by-cell), so a bug shared by
the module's bitmask propagation and its search cannot hide itself.
"""

import random
import time

import numpy as np
import pytest

from dgemma.tasks import sudoku as S

HARD = "800000000003600000070090200050007000000045700000100030001000068008500010090000400"
HARD_SOLUTION = "812753649943682175675491283154237896369845721287169534521974368438526917796318452"


# ------------------------------------------------------------ reference solvers


def _box(r, c):
    return r // 3 * 3 + c // 3


def brute_force_count(grid, limit=2):
    """Plain backtracking over the blank cells in reading order, no propagation."""
    rows, cols, boxes = ([set() for _ in range(9)] for _ in range(3))
    for i, d in enumerate(grid):
        if d:
            r, c = divmod(i, 9)
            if d in rows[r] or d in cols[c] or d in boxes[_box(r, c)]:
                return 0
            rows[r].add(d)
            cols[c].add(d)
            boxes[_box(r, c)].add(d)
    blanks = [divmod(i, 9) for i, d in enumerate(grid) if not d]

    def count_from(k):
        if k == len(blanks):
            return 1
        r, c = blanks[k]
        b = _box(r, c)
        total = 0
        for d in range(1, 10):
            if d in rows[r] or d in cols[c] or d in boxes[b]:
                continue
            rows[r].add(d)
            cols[c].add(d)
            boxes[b].add(d)
            total += count_from(k + 1)
            rows[r].remove(d)
            cols[c].remove(d)
            boxes[b].remove(d)
            if total >= limit:
                break
        return total

    return count_from(0)


def reference_singles(grid):
    """Naked and hidden singles on a 9x9 list of lists, recomputing every
    candidate set from the placed digits each time; the full grid or None."""
    g = [list(grid[r * 9 : r * 9 + 9]) for r in range(9)]

    def candidates(r, c):
        used = set(g[r]) | {g[k][c] for k in range(9)}
        br, bc = r // 3 * 3, c // 3 * 3
        used |= {g[br + i][bc + j] for i in range(3) for j in range(3)}
        return set(range(1, 10)) - used

    units = (
        [[(r, c) for c in range(9)] for r in range(9)]
        + [[(r, c) for r in range(9)] for c in range(9)]
        + [[(br + i, bc + j) for i in range(3) for j in range(3)]
           for br in (0, 3, 6) for bc in (0, 3, 6)]
    )
    while True:
        placed = False
        for r in range(9):
            for c in range(9):
                if not g[r][c] and len(cand := candidates(r, c)) == 1:
                    g[r][c] = cand.pop()
                    placed = True
        for unit in units:
            present = {g[r][c] for r, c in unit}
            for d in set(range(1, 10)) - present:
                spots = [(r, c) for r, c in unit if not g[r][c] and d in candidates(r, c)]
                if len(spots) == 1:
                    g[spots[0][0]][spots[0][1]] = d
                    placed = True
                    present.add(d)
        if not placed:
            break
    flat = [d for row in g for d in row]
    return None if 0 in flat else flat


# --------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def mixed():
    """Half singles, half search puzzles over the default givens range."""
    return S.generate_dataset(10, 1, kind="singles") + S.generate_dataset(10, 2, kind="search")


@pytest.fixture(scope="module")
def unlabelled():
    """Labels left to chance; low givens so both labels are common."""
    return S.generate_dataset(30, 3, givens_range=(22, 30))


# ------------------------------------------------------------------- generator


def test_generated_puzzles_have_exactly_one_solution(mixed):
    for p in mixed:
        assert S.count_solutions(p.puzzle) == 1
        assert brute_force_count(p.puzzle) == 1, S.to_string(p.puzzle)


def test_generated_solution_is_valid_and_keeps_givens(mixed):
    for p in mixed:
        assert S.is_valid_solution(p.solution, p.puzzle)
        assert all(g in (0, d) for g, d in zip(p.puzzle, p.solution))
        assert p.givens == sum(1 for d in p.puzzle if d)
        assert S.solve(p.puzzle) == p.solution


@pytest.mark.parametrize("kind", [None, "singles", "search"])
@pytest.mark.parametrize("givens", [26, 32, 40])
def test_givens_match_request(kind, givens):
    p = S.generate_puzzle(random.Random(givens), givens, kind)
    assert p.givens == givens == sum(1 for d in p.puzzle if d)
    if kind is not None:
        assert p.kind == kind


def test_unreachable_target_keeps_fewest_givens_found():
    p = S.generate_puzzle(random.Random(0), givens=17)
    assert 17 < p.givens == sum(1 for d in p.puzzle if d)
    assert S.count_solutions(p.puzzle) == 1


def test_minimal_puzzle_when_no_target():
    p = S.generate_puzzle(random.Random(4))
    for i in range(81):
        if p.puzzle[i]:
            fewer = p.puzzle.copy()
            fewer[i] = 0
            assert S.count_solutions(fewer) == 2


def test_difficulty_labels_match_reference_singles(unlabelled, mixed):
    for p in unlabelled + mixed:
        expected = "singles" if reference_singles(p.puzzle) == p.solution else "search"
        assert S.difficulty(p.puzzle) == p.kind == expected, S.to_string(p.puzzle)
    assert {p.kind for p in unlabelled} == {"singles", "search"}
    assert [p.kind for p in mixed] == ["singles"] * 10 + ["search"] * 10


def test_singles_solver_returns_solution_or_none(unlabelled):
    for p in unlabelled:
        expected = p.solution if p.kind == "singles" else None
        assert S.solve_with_singles(p.puzzle) == expected


def test_dataset_is_reproducible():
    a = S.generate_dataset(5, seed=11, kind="search")
    assert a == S.generate_dataset(5, seed=11, kind="search")
    assert a != S.generate_dataset(5, seed=12, kind="search")


def test_unreachable_search_target_raises():
    # No 80-given puzzle needs search: adding givens back can never get there.
    with pytest.raises(S.SudokuError, match="no search puzzle with 80 givens"):
        S.generate_puzzle(random.Random(0), 80, "search")


def test_bad_generator_arguments():
    with pytest.raises(ValueError, match="kind"):
        S.generate_puzzle(random.Random(0), 30, "hard")
    with pytest.raises(ValueError, match="givens"):
        S.generate_puzzle(random.Random(0), 10)


# ---------------------------------------------------------------------- solvers


def test_hard_puzzle_solved_fast_and_needs_search():
    puzzle = S.parse_grid(HARD)
    start = time.perf_counter()
    solution = S.solve(puzzle)
    elapsed = time.perf_counter() - start
    assert S.to_string(solution) == HARD_SOLUTION
    assert S.is_valid_solution(solution, puzzle)
    assert elapsed < 0.5  # typically ~10 ms; generous for a loaded CI box
    assert S.count_solutions(puzzle) == 1
    assert S.difficulty(puzzle) == "search"
    assert S.solve_with_singles(puzzle) is None


def test_unsolvable_without_conflicting_givens():
    # Row 1 holds 1-8, and the 9 in column 9 leaves cell (1, 9) nothing.
    blocked = S.parse_grid("12345678." + "........9" + "." * 63)
    assert S.solve(blocked) is None
    assert S.count_solutions(blocked) == 0
    assert S.solve_with_singles(blocked) is None


def test_wrong_but_legal_given_makes_unique_puzzle_unsolvable(mixed):
    # Any solution would be a second solution of the original puzzle.
    p = mixed[-1]
    cell = p.puzzle.index(0)
    digit = next(d for d in range(1, 10) if d != p.solution[cell] and all(
        p.puzzle[q] != d for q in S.PEERS[cell]))
    wrong = p.puzzle.copy()
    wrong[cell] = digit
    assert S.parse_grid(S.to_string(wrong)) == wrong  # no conflicting givens
    assert S.solve(wrong) is None
    assert S.count_solutions(wrong) == 0 == brute_force_count(wrong)


def test_count_solutions_respects_limit():
    empty = [0] * 81
    assert S.count_solutions(empty, limit=1) == 1
    assert S.count_solutions(empty, limit=5) == 5


def test_is_valid_solution_rejects_bad_grids():
    solution = S.parse_grid(HARD_SOLUTION)
    puzzle = S.parse_grid(HARD)
    assert S.is_valid_solution(solution) and S.is_valid_solution(solution, puzzle)
    swapped = solution.copy()
    swapped[0], swapped[1] = swapped[1], swapped[0]  # rows still fine, columns not
    assert not S.is_valid_solution(swapped)
    assert not S.is_valid_solution(solution[:80])
    assert not S.is_valid_solution(solution[:80] + [0])
    relabelled = [d % 9 + 1 for d in solution]  # a valid grid, but not this puzzle's
    assert S.is_valid_solution(relabelled) and not S.is_valid_solution(relabelled, puzzle)


# ------------------------------------------------------------------------ text


def test_parse_accepts_dots_zeros_and_whitespace():
    text = "\n".join(HARD[r * 9 : r * 9 + 9].replace("0", ".") for r in range(9))
    assert S.parse_grid("  " + text + "\n") == [int(ch) for ch in HARD]


def test_parse_wrong_length():
    with pytest.raises(S.SudokuError, match="expected 81 cells, found 80"):
        S.parse_grid(HARD[:80])
    with pytest.raises(S.SudokuError, match="found 82"):
        S.parse_grid(HARD + "1")


def test_parse_bad_character():
    with pytest.raises(S.SudokuError, match=r"invalid character 'x' at index 5\b"):
        S.parse_grid(HARD[:5] + "x" + HARD[6:])
    with pytest.raises(S.SudokuError, match=r"'\*' at index 12\b"):
        S.parse_grid("1 2\n" + "." * 8 + "*" + "." * 71)


@pytest.mark.parametrize(
    "cells, where",
    [
        ({0: 5, 8: 5}, "row 1"),
        ({4: 7, 76: 7}, "column 5"),
        ({30: 3, 40: 3}, "box 5"),
        ({60: 9, 80: 9}, "box 9"),
    ],
)
def test_parse_conflicting_givens(cells, where):
    text = "".join(str(cells.get(i, 0)) for i in range(81))
    digit = next(iter(cells.values()))
    with pytest.raises(S.SudokuError, match=f"digit {digit} appears twice in {where}$"):
        S.parse_grid(text)


def test_sudoku_error_is_value_error():
    assert issubclass(S.SudokuError, ValueError)


def test_string_round_trip_and_format():
    puzzle = S.parse_grid(HARD)
    assert S.parse_grid(S.to_string(puzzle)) == puzzle
    lines = S.format_grid(puzzle).splitlines()
    assert len(lines) == 11 and lines[3] == lines[7] == "------+-------+------"
    assert lines[0] == "8 . . | . . . | . . ."
    assert lines[10] == ". 9 . | . . . | 4 . ."


# --------------------------------------------------------------------- encoding


def test_special_ids_and_vocab():
    assert (S.PAD, S.EOS, S.BOS, S.CELL_OFFSET, S.VOCAB_SIZE) == (0, 1, 2, 16, 832)
    # Every prompt-cell token lies above the canvas digits and inside the vocabulary.
    assert S.encode_prompt([9] * 81)[-1] == 16 + 800 + 9 < S.VOCAB_SIZE


def test_encode_decode_round_trip(mixed):
    for p in mixed[:5]:
        prompt = S.encode_prompt(p.puzzle)
        assert len(prompt) == 82 and prompt[0] == S.BOS
        assert all(t == 16 + 10 * i + d for i, (t, d) in enumerate(zip(prompt[1:], p.puzzle)))
        assert len(set(prompt[1:])) == 81  # the same digit in two cells is two tokens
        target = S.encode_solution(p.solution)
        assert sorted(set(target)) == list(range(3, 12))
        assert S.decode_solution(target) == p.solution
        assert S.decode_prompt(prompt[1:]) == p.puzzle
        assert S.decode_solution(prompt[1:]) == [0] * 81  # prompt cells are never canvas digits
        assert max(prompt + target) < S.VOCAB_SIZE
        # Model output arrives as arrays, not lists.
        assert S.decode_solution(np.array(target)) == p.solution
        assert S.encode_prompt(np.array(p.puzzle)) == prompt


def test_decode_maps_non_digit_tokens_to_zero():
    assert S.decode_solution([0, 1, 2, 3, 11, 12, 13, 15, 16, 831]) == [0, 0, 0, 1, 9, 0, 0, 0, 0, 0]


def test_encode_solution_rejects_blanks():
    with pytest.raises(S.SudokuError, match="blank"):
        S.encode_solution(S.parse_grid(HARD))


def test_clamp_canvas_marks_exactly_the_givens(mixed):
    for p in mixed:
        canvas, clamp = S.clamp_canvas(p.puzzle)
        assert len(canvas) == len(clamp) == 81
        assert sum(clamp) == p.givens
        for d, t, c in zip(p.puzzle, canvas, clamp):
            assert c == (d != 0)
            assert t == (d + 2 if d else S.PAD)
