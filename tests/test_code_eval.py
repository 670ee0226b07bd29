"""The code-infill evaluation: tasks cut from held-out modules, every method scored, the table saved."""

import json

from dgemma.tasks.code_eval import METHODS, main, make_tasks
from dgemma.tokenizer import HELD_OUT, stdlib_files


def test_tasks_are_spans_of_held_out_modules():
    files = stdlib_files(held_out=True)
    assert files and all(any(f.as_posix().endswith(h) for h in HELD_OUT) for f in files)
    texts = {}
    for f in files:
        texts.setdefault(f.name, []).append(f.read_text(encoding="utf-8"))
    for kind, widths in (("single-line", {1}), ("multi-line", {2, 3, 4})):
        tasks = make_tasks(files, 6, kind, seed=1)
        assert tasks == make_tasks(files, 6, kind, seed=1)  # deterministic for a seed
        for t in tasks:
            assert t.prefix + t.span + t.suffix in texts[t.module]  # the gap is cut out, nothing else changes
            lines = t.span.splitlines()
            assert len(lines) in widths and all(s.strip() and not s.strip().startswith("#") for s in lines)


def test_every_method_is_scored_and_the_table_saved(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the table goes to ./bench/results
    assert main(["--tasks", "1", "--steps", "2", "--max-prefix", "32", "--json", "--save", "infill-test"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["task"], r["method"]) for r in rows] == [(k, m) for k in ("single-line", "multi-line") for m in METHODS]
    for r in rows:
        assert r["tasks"] == 1 and 0 <= r["exact_match"] <= 1 and 0 <= r["ast_valid"] <= 1
        assert r["tokens_per_forward"] == 1.0 if r["method"] == "ar-prefix-only" else r["tokens_per_forward"] > 0
    table = json.loads((tmp_path / "bench" / "results" / "infill-test.json").read_text())
    assert len(table["rows"]) == 6 and "At most 2 denoising steps" in table["text"]
