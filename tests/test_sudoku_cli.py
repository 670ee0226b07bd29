"""`dgemma sudoku` on a small random sudoku-shaped checkpoint: messages, exit codes, clamping, both methods."""

import json
import math
import subprocess
import sys

import pytest
import torch

from dgemma import DiffusionGemma, get_preset
from dgemma.tasks import sudoku as S
from dgemma.tasks.sudoku_decoding import RuleCheckedSampler, decoding_config, solve_batch

HARD = "800000000003600000070090200050007000000045700000100030001000068008500010090000400"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("sudoku-model")
    model = DiffusionGemma(get_preset("tiny").replace(vocab_size=S.VOCAB_SIZE, canvas_length=81))
    model.init_weights(torch.Generator().manual_seed(0))
    model.save_pretrained(path)
    return path


def dgemma(*args):
    return subprocess.run([sys.executable, "-m", "dgemma.cli", "sudoku", *args], capture_output=True, text=True)


@pytest.mark.parametrize("puzzle, message", [
    ("12345", "expected 81 cells, found 5"),
    (HARD[:80] + "x", "invalid character 'x'"),
    ("11" + HARD[2:], "conflicting givens: digit 1 appears twice in row 1"),
    ("123456780" + "0" * 71 + "9", "no solution"),  # cell 9 of row 1 can only be 9, but column 9 has a 9
])
def test_bad_puzzles_fail_with_one_line(model_dir, puzzle, message):
    run = dgemma(puzzle, "--model", str(model_dir))
    assert run.returncode == 2
    assert message in run.stderr and len(run.stderr.strip().splitlines()) == 1


def test_solve_prints_grid_and_verify_reports_validity(model_dir):
    run = dgemma(HARD, "--model", str(model_dir), "--steps", "4", "--verify", "--json")
    answer = json.loads(run.stdout)
    assert run.returncode == (0 if answer["valid"] else 1)
    cells = [0 if c == "." else int(c) for c in answer["solution"]]
    assert answer["valid"] == S.is_valid_solution(cells, S.parse_grid(HARD))
    # clamped givens always survive
    assert all(a == p for a, p in zip(answer["solution"], HARD) if p != "0")
    # quantized while loading (the quality benchmark's path): the same answer whether quantized here or in Python
    run = dgemma(HARD, "--model", str(model_dir), "--steps", "4", "--json", "--quantize", "int4", "--seed", "1")
    model = DiffusionGemma.from_pretrained(model_dir, quantize="int4").eval()
    ours = solve_batch(model, [S.parse_grid(HARD)], "diffusion", cfg=decoding_config(model, steps=4), seed=1)[0][0]
    assert json.loads(run.stdout)["solution"] == "".join(str(c) if c else "." for c in ours)


def test_tries_keep_the_first_valid_answer(model_dir, monkeypatch, capsys):
    """--tries samples with seed, seed + 1, ... until the rule checker accepts an answer: here the second try."""
    import dgemma.tasks.sudoku_decoding as decoding
    from dgemma.cli import main
    seeds, solution = [], S.solve(S.parse_grid(HARD))

    def fake_solve(model, puzzles, method, clamp, cfg, seed, on_step, ar_temperature):
        seeds.append(seed)
        return [solution if seed == 8 else [1] * 81], [2.0]
    monkeypatch.setattr(decoding, "solve_batch", fake_solve)
    assert main(["sudoku", HARD, "--model", str(model_dir), "--tries", "5", "--seed", "7", "--json", "--verify"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert seeds == [7, 8] and (out["tries"], out["seed"], out["valid"]) == (2, 8, True)
    seeds.clear()
    assert main(["sudoku", HARD, "--model", str(model_dir), "--tries", "3", "--verify"]) == 1  # never valid
    assert seeds == [0, 1, 2] and "NOT a valid solution" in capsys.readouterr().out


def test_both_methods_answer_every_cell_position(model_dir):
    model = DiffusionGemma.from_pretrained(model_dir)
    puzzles = [p.puzzle for p in S.generate_dataset(3, seed=5)]
    for method in ("diffusion", "ar"):
        answers, tpf = solve_batch(model, puzzles, method, cfg=decoding_config(model, steps=4))
        assert len(answers) == 3 and all(len(a) == 81 for a in answers) and len(tpf) == 3
    for sampler, rules in (("topk", False), ("entropy", False), ("confidence", False), ("margin", False),
                           ("margin", True), ("topk", True)):
        cfg = decoding_config(model, 4, sampler, rules=rules)
        answers, _ = solve_batch(model, puzzles, "diffusion", clamp=True, cfg=cfg)
        for a, p in zip(answers, puzzles):
            assert all(x == y for x, y in zip(a, p) if y)


def test_not_a_sudoku_model_is_rejected(tmp_path):
    DiffusionGemma.from_pretrained("tiny").save_pretrained(tmp_path)
    run = dgemma(HARD, "--model", str(tmp_path))
    assert run.returncode == 2 and "is not a sudoku model" in run.stderr


def test_eval_compares_methods_on_the_same_puzzles_and_saves_one_table(model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # results go to ./bench/results
    from dgemma.cli import main
    rc = main(["sudoku", "--eval", "2", "--kinds", "singles", "--steps", "2", "--batch", "2", "--json",
               "--model", str(model_dir), "--ar-model", str(model_dir), "--save", "sudoku-test"])
    assert rc == 0
    table = json.loads((tmp_path / "bench" / "results" / "sudoku-test.json").read_text())
    labels = [row[0] for row in table["rows"]]
    assert labels == ["block diffusion", "AR decoding of its encoder", "AR-trained baseline"]
    assert [row[3] for row in table["rows"]] == ["yes", "no", "no"]  # givens are clamped for diffusion only
    assert all(row[1] == "singles" and row[2] == 2 and row[4] == "1" for row in table["rows"])


def test_eval_with_tries_reports_pass_at_1_and_pass_at_n_apart(model_dir, monkeypatch, capsys):
    """A fake model that solves a puzzle on seed 1 only: pass@1 0%, best of 3 100%; the retry runs only on what
    the first try left, and AR gets the same budget (greedy, then sampled)."""
    import dgemma.tasks.sudoku_decoding as decoding
    from dgemma.tasks.sudoku_cli import evaluate, table_rows
    calls = []

    def fake_solve(model, puzzles, method, clamp, cfg, seed, on_step, ar_temperature):
        calls.append((method, len(puzzles), seed, ar_temperature))
        return [S.solve(p) if seed % 100 == 1 else [1] * 81 for p in puzzles], [3.0] * len(puzzles)
    monkeypatch.setattr(decoding, "solve_batch", fake_solve)
    puzzles = S.generate_dataset(4, seed=5)
    row = {**evaluate(None, "diffusion", puzzles, "singles", True, None, 4, tries=3), "label": "block diffusion"}
    assert (row["pass@1"], row["solved"]) == (0.0, 1.0)
    assert calls == [("diffusion", 4, 0, 0.0), ("diffusion", 4, 1, 1.0)]
    rows = table_rows(row)
    assert [(r[4], r[5]) for r in rows] == [("1", "0.0%"), ("best of 3", "100.0%")]
    calls.clear()
    evaluate(None, "ar", puzzles, "singles", False, None, 4, tries=3)
    assert [c[3] for c in calls] == [0.0, 1.0]


def test_file_answers_every_line_in_order_and_names_bad_lines(model_dir, tmp_path):
    good = [p.puzzle for p in S.generate_dataset(3, seed=11)]
    lines = [S.to_string(good[0]), "12345", S.to_string(good[1]).replace(".", "0"), "11" + HARD[2:],
             S.to_string(good[2])]
    path = tmp_path / "puzzles.txt"
    path.write_text("\n".join(lines) + "\n")
    for source, stdin in ((str(path), None), ("-", path.read_text())):
        run = subprocess.run([sys.executable, "-m", "dgemma.cli", "sudoku", "--file", source, "--model",
                              str(model_dir), "--steps", "2", "--batch", "2"], capture_output=True, text=True,
                             input=stdin)
        assert run.returncode == 1, run.stderr
        out = run.stdout.split("\n")
        assert len(out) == 6 and out[5] == "" and out[1] == out[3] == ""
        for answer, puzzle in zip((out[0], out[2], out[4]), good):
            assert len(answer) == 81 and answer.isdigit()
            assert all(a == str(p) for a, p in zip(answer, puzzle) if p)  # the givens, clamped, in the right line
        errors = [line for line in run.stderr.splitlines() if "error" in line]
        assert len(errors) == 2 and ":2: expected 81 cells" in errors[0] and ":4: conflicting givens" in errors[1]
    path.write_text(S.to_string(good[0]) + "\n")
    run = subprocess.run([sys.executable, "-m", "dgemma.cli", "sudoku", "--file", str(path), "--model",
                          str(model_dir), "--steps", "2"], capture_output=True, text=True)
    assert run.returncode == 0 and len(run.stdout.splitlines()) == 1


def test_rule_checked_sampler_renoises_kept_cells_that_clash_but_never_givens():
    """Cells 0 and 1 (row 1) both keep digit 5: both renoised; cell 2 keeps 5 too but is a given, so it stays,
    which also makes cell 10 (same box, digit 5) clash; cell 80 keeps 5 alone in its units and stays."""
    from dgemma.sampling import StepStats, TopKScheduleSampler
    sampled = torch.full((1, 81), S.PAD)
    for cell in (0, 1, 2, 10, 80):
        sampled[0, cell] = 5 + S.DIGIT_OFFSET
    fixed = torch.zeros(1, 81, dtype=torch.bool)
    fixed[0, 2] = True
    entropy = torch.ones(1, 81)
    entropy[0, [0, 1, 10, 80]] = 0.0  # the most certain: kept by the schedule's first step
    stats = StepStats(sampled, sampled, entropy, -entropy, None, fixed=fixed)
    inner = TopKScheduleSampler()
    keep_inner = inner.accept(stats, 20, 20) | fixed
    assert keep_inner[0, [0, 1, 2, 10, 80]].all()
    keep = RuleCheckedSampler(inner).accept(stats, 20, 20) | fixed
    assert keep_inner[0].nonzero().flatten().tolist() == [0, 1, 2, 10, 80]
    assert keep[0].nonzero().flatten().tolist() == [2, 80]
    assert (keep | keep_inner).equal(keep_inner)  # only ever removes cells


@pytest.mark.parametrize("args, message", [
    (["--save", "x", HARD], "use it with --eval N"),
    (["--eval", "0"], "positive number of puzzles"),
    (["--eval", "2", HARD], "not PUZZLE and --eval N"),
    (["--ar-model", ".", HARD], "baseline for --eval"),
    (["--split", "validation", HARD], "use it with --eval N"),
    (["--steps", "0", HARD], "max_denoising_steps must be a positive integer"),
    (["--stable", "0", HARD], "--stable needs a positive number of steps"),
    (["--tries", "0", HARD], "--tries needs a positive number of tries"),
    (["--file", "x.txt", HARD], "not PUZZLE and --file"),
    (["--file", "x.txt", "--eval", "3"], "not --eval N and --file"),
    (["--batch", "0", HARD], "--batch needs a positive number"),
    (["--file", "/nonexistent/p.txt"], "cannot read puzzles from /nonexistent/p.txt"),
])
def test_flag_misuse_fails_with_one_line(model_dir, args, message):
    run = dgemma(*args, "--model", str(model_dir))
    assert run.returncode == 2 and message in run.stderr and len(run.stderr.strip().splitlines()) == 1


def test_decoding_settings_come_from_the_checkpoint_unless_overridden(model_dir, tmp_path):
    import shutil
    shutil.copytree(model_dir, tmp_path / "m")
    path = tmp_path / "m" / "generation_config.json"
    gc = json.loads(path.read_text())
    path.write_text(json.dumps({**gc, "t_min": 1.5, "t_max": 2.0, "max_denoising_steps": 30,
                                "stability_threshold": 5, "confidence_threshold": 100.0}))
    model = DiffusionGemma.from_pretrained(tmp_path / "m")
    cfg = decoding_config(model)
    assert (cfg.t_min, cfg.t_max, cfg.max_denoising_steps, cfg.eos_token_id) == (1.5, 2.0, 30, ())
    assert (cfg.stability_threshold, cfg.confidence_threshold) == (5, 100.0)
    cfg = decoding_config(model, steps=8, sampler="entropy", t_min=0.3, t_max=0.6, stable=2)
    assert (cfg.t_min, cfg.t_max, cfg.max_denoising_steps, type(cfg.sampler).__name__) == (
        0.3, 0.6, 8, "EntropyBoundSampler")
    assert (cfg.stability_threshold, cfg.confidence_threshold) == (2, math.inf)  # any entropy
