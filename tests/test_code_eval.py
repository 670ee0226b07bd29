"""The code model's evaluation: tasks cut from held-out variants, every task type and method scored, the table saved."""

import json

import pytest

from dgemma.tasks import code_corpus as C
from dgemma.tasks.code_eval import METHODS, TASKS, function_part, main, make_tasks


def test_function_part_stops_at_the_first_unindented_line():
    text = "def f(x):\n    y = x\n\n    return y\n\n\nassert f(1) == 1\nprint(2)\n"
    assert function_part(text) == "def f(x):\n    y = x\n\n    return y\n"
    assert function_part("def f(x):\n    return x") == "def f(x):\n    return x\n"


@pytest.mark.parametrize("kind", TASKS)
def test_tasks_are_cuts_of_held_out_documents(kind):
    tasks = make_tasks(kind, 40, seed=3)
    assert [(t.prefix, t.gap, t.suffix) for t in tasks] == [(t.prefix, t.gap, t.suffix) for t in make_tasks(kind, 40, 3)]
    for t in tasks:
        v = t.variant
        assert C.split_of(v) == "heldout"
        text = t.prefix + t.gap + t.suffix
        assert any(text == C.document(v, i) for i in range(len(v.family.tests)))  # nothing but the cut changed
        assert t.prefix.startswith(v.signature()) and t.gap.startswith("\n")
        if kind == "complete":
            assert t.prefix == v.signature() and v.name in v.family.names and not t.suffix
        elif kind == "complete+doc":
            assert t.prefix == v.signature() + "\n" + v.docstring().rstrip("\n") and not t.suffix
        elif kind == "infill-body":
            assert t.prefix == v.signature() and t.gap + "\n" == "\n" + v.docstring() + v.body()
            assert t.suffix.startswith("\n\n\nassert ")
        else:
            assert t.gap.count("\n") == 1 and t.gap[1:] + "\n" in v.body() and t.suffix.startswith("\n")


def test_every_task_and_method_is_scored_and_the_table_saved(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the table goes to ./bench/results
    assert main(["--tasks", "1", "--steps", "2", "--json", "--save", "code-test"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["task"], r["method"]) for r in rows] == [(k, m) for k in TASKS for m in METHODS[k]]
    for r in rows:
        assert r["tasks"] == 1 and 0 <= r["pass_rate"] <= r["parse_rate"] <= 1
        assert (r["exact_match"] is None) == r["task"].startswith("complete")
        assert r["tokens_per_forward"] == 1.0 if r["method"].startswith("ar") else r["tokens_per_forward"] > 0
    table = json.loads((tmp_path / "bench" / "results" / "code-test.json").read_text())
    assert len(table["rows"]) == len(rows) and f"{len(C.families())} function families" in table["text"]
