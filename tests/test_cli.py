"""The text commands (generate, infill, edit, chat) end to end on a small checkpoint with the bundled tokenizer:
help on every flag, quiet/json output, determinism, and one-line errors for bad input."""

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dgemma import DiffusionGemma
from dgemma.cli import build_parser, main
from dgemma.config import get_preset

BUNDLED = Path(__file__).resolve().parent.parent / "dgemma" / "assets" / "code"


@pytest.fixture
def ckpt(text_ckpt):
    """A random small model over the bundled tokenizer's vocabulary, canvas 16, context 96 (conftest.py)."""
    return text_ckpt


def run(argv, capsys):
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_every_flag_of_every_command_has_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert {"info", "generate", "infill", "edit", "chat", "serve", "train", "sudoku", "bench"} <= set(sub.choices)
    for name, p in sub.choices.items():
        for action in p._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help and action.help.strip(), f"dgemma {name} {action.option_strings or action.dest}"


def test_generate_quiet_and_json_are_deterministic_for_a_seed(ckpt, capsys):
    base = ["generate", "def add(a, b):", "--model", str(ckpt), "--max-new-tokens", "32", "--steps", "4",
            "--seed", "3"]
    rc, quiet, err = run(base + ["--quiet"], capsys)
    assert rc == 0 and quiet.endswith("\n") and "\x1b[" not in quiet
    rc, js, _ = run(base + ["--json"], capsys)
    record = json.loads(js)
    assert rc == 0
    assert {"text", "prompt_tokens", "generated_tokens", "tokens_per_forward", "steps_per_canvas", "seconds",
            "tokens_per_second"} <= record.keys()
    assert quiet == record["text"] + "\n"  # --quiet prints exactly the generated text
    assert record["generated_tokens"] <= 32 and len(record["steps_per_canvas"]) == 2
    assert all(1 <= s <= 4 for s in record["steps_per_canvas"])
    again = json.loads(run(base + ["--json"], capsys)[1])
    assert again["text"] == record["text"] and again["steps_per_canvas"] == record["steps_per_canvas"]
    int8 = base + ["--json", "--quantize", "int8"]  # int8 weights: it runs, deterministically
    rc, js, _ = run(int8, capsys)
    assert rc == 0 and json.loads(js)["text"] == json.loads(run(int8, capsys)[1])["text"]


@pytest.mark.parametrize("argv, message", [
    (["generate", "x", "--model", "/nonexistent/model"], "/nonexistent/model: not a local checkpoint directory (no such directory)"),
    (["generate", "   ", "--model", "MODEL"], "empty prompt"),
    (["generate", "x " * 200, "--model", "MODEL"], "more than the model's context of 96"),
    (["generate", "x", "--model", "MODEL", "--max-new-tokens", "0"], "max_new_tokens"),
    (["generate", "x", "--model", "MODEL", "--top-p", "1.5"], "top_p"),
    (["infill", "--model", "MODEL"], "give --prefix"),
    (["edit", "/nonexistent.py", "--lines", "1-2", "--model", "MODEL"], "/nonexistent.py: no such file"),
])
def test_bad_input_is_one_line_and_exit_2(ckpt, capsys, argv, message):
    argv = [str(ckpt) if a == "MODEL" else a for a in argv]
    rc, out, err = run(argv, capsys)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and message in err, err


def test_generate_json_schema_writes_valid_json_and_bad_schemas_are_one_line(ckpt, tmp_path, capsys):
    from dgemma.json_schema import validate
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 9},
                                               "ok": {"type": "boolean"}, "s": {"type": "string", "maxLength": 6}}}
    good = tmp_path / "schema.json"
    good.write_text(json.dumps(schema))
    rc, out, _ = run(["generate", "x = ", "--model", str(ckpt), "--json-schema", str(good), "--steps", "3",
                      "--seed", "0", "--json"], capsys)
    assert rc == 0 and validate(json.loads(json.loads(out)["text"]), schema) == []
    (tmp_path / "bad.json").write_text('{"type": "string", "format": "email"}')
    (tmp_path / "broken.json").write_text('{"type": ')
    (tmp_path / "big.json").write_text(json.dumps({"type": "array", "items": {"type": "integer"}, "minItems": 30}))
    (tmp_path / "wide.json").write_text(json.dumps({"type": "array", "items": {"type": "string"}}))
    for argv, message in ((["--json-schema", str(tmp_path / "bad.json")], "bad.json: $: unsupported keyword 'format'"),
                          (["--json-schema", str(tmp_path / "broken.json")], "broken.json: not valid JSON"),
                          (["--json-schema", str(tmp_path / "nothere.json")], "nothere.json: no such file"),
                          (["--json-schema", str(tmp_path / "big.json"), "--max-new-tokens", "1024"],
                           "more than the model's context of 96"),
                          (["--json-schema", str(tmp_path / "big.json")], "more than max_new_tokens 256"),
                          (["--json-schema", str(tmp_path / "wide.json")], "value of 17 tokens does not fit in a canvas of 16"),
                          (["--json-schema", str(good), "--tries", "2"], "always valid JSON")):
        rc, out, err = run(["generate", "x", "--model", str(ckpt)] + argv, capsys)
        assert rc == 2 and out == "" and err.count("\n") == 1 and message in err, err


def test_generate_format_svg_is_always_well_formed(ckpt, capsys):
    from dgemma.markup import well_formed
    prompt = '<svg width="8" height="8">'
    for seed in range(2):
        rc, out, err = run(["generate", prompt, "--model", str(ckpt), "--format", "svg", "--steps", "2",
                            "--max-new-tokens", "32", "--seed", str(seed), "--json"], capsys)
        record = json.loads(out)
        assert rc == 0 and well_formed(prompt + record["text"], "svg"), record
        assert record["closed"] == ("no well-formed svg" in err)  # a repair by cutting is said out loud
    for argv, message in ((["<svg><"], "not well-formed markup at character 5"), (["<svg/>"], "already closes"),
                          (['<svg>', "--repair-rounds", "-1"], "--repair-rounds must be >= 0")):
        rc, out, err = run(["generate", *argv, "--model", str(ckpt), "--format", "svg"], capsys)
        assert rc == 2 and out == "" and message in err and err.count("\n") == 1, err


def test_checkpoint_without_tokenizer_is_named(ckpt, tmp_path, capsys):
    bare = tmp_path / "bare"
    shutil.copytree(ckpt, bare)
    (bare / "tokenizer.json").unlink()
    rc, _, err = run(["generate", "x", "--model", str(bare)], capsys)
    assert rc == 2 and f"{bare} has no tokenizer.json" in err and err.count("\n") == 1


def test_infill_keeps_prefix_and_suffix(ckpt, capsys):
    rc, out, _ = run(["infill", "--prefix", "def f(x):\n    return ", "--suffix", "\n\nprint(f(2))\n", "--gap", "5",
                      "--model", str(ckpt), "--steps", "4", "--seed", "0", "--json"], capsys)
    r = json.loads(out)
    assert rc == 0 and r["gap_tokens"] <= 5
    assert r["text"] == "def f(x):\n    return " + r["gap"] + "\n\nprint(f(2))\n"


def test_edit_rewrites_only_the_span_and_keeps_the_original(ckpt, tmp_path, capsys):
    src = tmp_path / "m.py"
    text = "import os\n\n\ndef f(x):\n    y = x + 1\n    return y\n\n\nprint(f(1))\n"
    src.write_text(text)
    rc, _, err = run(["edit", str(src), "--lines", "5-5", "--model", str(ckpt), "--steps", "4", "--seed", "0",
                      "--quiet", "--write"], capsys)
    assert rc == 0 and (tmp_path / "m.py.orig").read_text() == text
    new = src.read_text().splitlines(keepends=True)
    old = text.splitlines(keepends=True)
    assert new[:4] == old[:4] and new[-4:] == old[-4:]
    rc, _, err = run(["edit", str(src), "--lines", "7-3", "--model", str(ckpt)], capsys)
    assert rc == 2 and "--lines 7-3 is outside" in err


def test_chat_runs_one_reply_per_turn(ckpt, capsys, monkeypatch):
    import io
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello\nsecond question\n"))
    rc, out, err = run(["chat", "--model", str(ckpt), "--steps", "2", "--max-new-tokens", "16", "--seed", "0",
                        "--quiet"], capsys)
    assert rc == 0, err
    assert out.count("\n") >= 2  # one reply per user turn


def test_chat_reuses_the_cache_without_changing_a_token(ckpt):
    """Three turns with the cache reused where the re-rendered conversation extends it, and three without: the
    same replies, token for token; /reset starts over."""
    from dgemma.commands.chat import Conversation
    from dgemma.engine import GenerationConfig
    from dgemma.tokenizer import Tokenizer
    tok = Tokenizer.from_dir(ckpt)
    model = DiffusionGemma(get_preset("tiny").replace(vocab_size=tok.vocab_size, canvas_length=16,
                                                      max_position_embeddings=512)).eval()
    model.init_weights(torch.Generator().manual_seed(0))
    cfg = GenerationConfig(max_new_tokens=16, max_denoising_steps=3, eos_token_id=(1, 106, 50))
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]
    chats = [Conversation(model, tok, cfg, 512, "Be brief.", seed=3, tools=tools, reuse=r) for r in (True, False)]
    replies, reused = [[], []], []
    for turn in ("hi", "more", "again"):
        for k, chat in enumerate(chats):
            replies[k].append(chat.say(turn).content)
        reused.append(chats[0].reused)
    assert replies[0] == replies[1] and chats[1].reused == 0
    assert reused[0] == 0 and reused[1] > 0  # turn 2 did not encode turn 1's prompt again
    assert "<|tool>declaration:f{" in tok.decode(chats[0].seen, skip_special=False)
    chats[0].reset()
    assert chats[0].messages == [{"role": "system", "content": "Be brief."}] and chats[0].cache.length == 0


@pytest.mark.parametrize("content,message", [
    ("[1]", "expected a list of"), ("{", "not valid JSON"),
    ('[{"type": "function", "function": {"name": "a"}}, {"type": "function", "function": {"name": "a"}}]',
     "duplicate tool name"),
])
def test_chat_tools_file_errors_are_one_line(ckpt, tmp_path, capsys, content, message):
    path = tmp_path / "tools.json"
    path.write_text(content)
    rc, _, err = run(["chat", "--model", str(ckpt), "--tools", str(path)], capsys)
    assert rc == 2 and message in err and err.count("\n") == 1


def test_bundled_model_generates_from_the_console_script():
    """The README's main job: the installed console script with the bundled model and no arguments but a prompt."""
    exe = Path(sys.executable).with_name("dgemma")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "dgemma.cli"]
    r = subprocess.run(cmd + ["generate", "def fibonacci(n):", "--quiet", "--max-new-tokens", "64", "--steps", "8",
                              "--seed", "0"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()


def test_tries_keeps_the_first_sample_that_parses(ckpt, capsys, monkeypatch):
    import dgemma.commands.generate as G
    seen = []
    monkeypatch.setattr(G, "python_parses", lambda source: seen.append(source) or len(seen) == 2)
    rc, out, err = run(["generate", "def f(x):", "--model", str(ckpt), "--tries", "3", "--json", "--seed", "4",
                        "--max-new-tokens", "16", "--steps", "2"], capsys)
    assert rc == 0 and json.loads(out)["tries"] == 2 and json.loads(out)["parses"] is True
    assert len(seen) == 2 and seen[0] != seen[1]  # the second try drew with the next seed
    assert seen[1] == "def f(x):" + json.loads(out)["text"]
    monkeypatch.setattr(G, "python_parses", lambda source: False)
    rc, out, err = run(["generate", "def f(x):", "--model", str(ckpt), "--tries", "2", "--quiet", "--seed", "4",
                        "--max-new-tokens", "16", "--steps", "2"], capsys)
    assert rc == 0 and "try 2 of 2 does not parse as Python; keeping it" in err
    rc, _, err = run(["generate", "x", "--model", str(ckpt), "--tries", "0"], capsys)
    assert rc == 2 and "--tries must be at least 1" in err


def test_output_into_a_closed_pipe_ends_quietly():
    """`dgemma generate ... | head -1`: the reader leaves early; no traceback, the shell's SIGPIPE status."""
    import subprocess
    import sys
    proc = subprocess.Popen([sys.executable, "-m", "dgemma.cli", "generate", "def f(x):", "--quiet", "--seed", "0",
                             "--max-new-tokens", "64", "--steps", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # nobody reads: the first print hits a closed pipe
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and "Traceback" not in err, err


def test_internal_errors_are_not_shown_as_input_errors(monkeypatch, capsys):
    """A bug (here: a RuntimeError from inside `dgemma info`) is reported as an internal error with exit code 1
    and a pointer to -v, which shows the traceback; bad input stays a one-line error with exit code 2."""
    import dgemma.commands.info
    from dgemma.cli import main

    def broken(config):
        raise RuntimeError("boom")
    monkeypatch.setattr(dgemma.commands.info, "summary", broken)
    assert main(["info", "tiny"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == "dgemma info: internal error: RuntimeError: boom (run with -v for the traceback)"
    with pytest.raises(RuntimeError, match="boom"):
        main(["-v", "info", "tiny"])
    monkeypatch.undo()
    assert main(["info", "tiny", "--context", "0"]) == 2 and "internal" not in capsys.readouterr().err
