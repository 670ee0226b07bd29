"""Faults while loading, each on a corrupted copy of the bundled model: the CLI prints one line naming the file and
the problem, the server's /health says error with the reason, and --exit-on-load-error exits non-zero."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from dgemma.cli import main

BUNDLED = Path(__file__).resolve().parent.parent / "dgemma" / "assets" / "code"


def truncated(d: Path):
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[:len(data) // 2])


def wrong_dtype(d: Path):
    tensors = load_file(d / "model.safetensors")
    key = next(k for k in tensors if k.endswith("input_layernorm.weight"))
    tensors[key] = tensors[key].to(torch.int32)
    save_file(tensors, d / "model.safetensors")


def missing_shard(d: Path):
    tensors = load_file(d / "model.safetensors")
    keys = sorted(tensors)
    half = len(keys) // 2
    save_file({k: tensors[k] for k in keys[:half]}, d / "model-00001-of-00002.safetensors")
    (d / "model.safetensors").unlink()
    weight_map = {k: "model-00001-of-00002.safetensors" if i < half else "model-00002-of-00002.safetensors"
                  for i, k in enumerate(keys)}
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


def config_mismatch(d: Path):
    config = json.loads((d / "config.json").read_text())
    config["text_config"]["hidden_size"] *= 2
    (d / "config.json").write_text(json.dumps(config))


def tokenizer_mismatch(d: Path):
    config = json.loads((d / "config.json").read_text())
    config["text_config"]["vocab_size"] = 512  # the weights then disagree too; the tokenizer check comes first
    (d / "config.json").write_text(json.dumps(config))
    tensors = load_file(d / "model.safetensors")
    save_file({k: v[:512] if v.shape[0] == json.loads((BUNDLED / "config.json").read_text())["text_config"][
        "vocab_size"] and v.dim() == 2 and "embed" in k else v for k, v in tensors.items()}, d / "model.safetensors")


FAULTS = {
    "truncated shard": (truncated, "model.safetensors", "cannot read safetensors header"),
    "wrong dtype": (wrong_dtype, "model.safetensors", "is stored as int32, not a floating-point dtype"),
    "missing shard": (missing_shard, "model.safetensors.index.json",
                      "names shard model-00002-of-00002.safetensors, which does not exist"),
    "config mismatch": (config_mismatch, "model.safetensors", "but config.json implies"),
    "tokenizer mismatch": (tokenizer_mismatch, None, "tokens but the model only 512"),
}


@pytest.fixture(params=FAULTS)
def fault(request, tmp_path):
    corrupt, file, message = FAULTS[request.param]
    d = tmp_path / "model"
    shutil.copytree(BUNDLED, d)
    corrupt(d)
    return d, (d / file if file else d), message


def test_cli_names_the_file_and_the_problem(fault, capsys):
    d, file, message = fault
    assert main(["generate", "def f():", "--model", str(d)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and str(file) in err


def test_server_health_reports_the_reason(fault):
    from dgemma.serving.app import ServerState
    d, file, message = fault
    state = ServerState(str(d))
    state.load()
    assert state.status == "error" and message in state.load_error and str(file) in state.load_error


def test_exit_on_load_error_exits_non_zero(tmp_path):
    d = tmp_path / "model"
    shutil.copytree(BUNDLED, d)
    truncated(d)
    r = subprocess.run([sys.executable, "-m", "dgemma.cli", "serve", "--model", str(d), "--port", "0",
                        "--exit-on-load-error"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 3 and "cannot read safetensors header" in r.stderr
