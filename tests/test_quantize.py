"""Weight-only quantization (dgemma.quantize): each format's rounding bound and stored layout, the kernels against
the dequantized weights, quantized models near the original, quantized presets and loading equal to quantizing a
loaded model, quantized checkpoints that round-trip, and the bad inputs the issue names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from dgemma import DiffusionGemma
from dgemma.checkpoint import CheckpointError
from dgemma.cli import main
from dgemma.config import get_preset
from dgemma.moe import Experts
from dgemma.quantize import (FP8_MAX, QuantExperts, QuantizationError, QuantLinear, SCHEMES, check_fp8_device,
                             dequantize, quantize_, quantize_tensor, resolve, weight_stats)


def equal_states(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    bits = (lambda t: t.view(torch.uint8) if t.dtype == torch.float8_e4m3fn else t)
    return sa.keys() == sb.keys() and all(sa[k].dtype == sb[k].dtype and torch.equal(bits(sa[k]), bits(sb[k]))
                                          for k in sa)


def test_each_format_rounds_each_weight_within_its_step():
    """In float64 (exact): int8 and int4 within half a step of their row or group, fp8 within half an e4m3 ulp
    (2^-4 relative, 2^-10 of the scale below the normal range); all-zero rows and groups get scale 1."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 16, 64, generator=g, dtype=torch.float64)
    w[0, 0] = 0
    w[1, 1, :32] = torch.rand(32, generator=g, dtype=torch.float64) + 1  # a group of positive weights only
    s = quantize_tensor(w, "int8")
    assert s[""].dtype == torch.int8 and s["_scale"].shape == (3, 16) and int(s[""].abs().max()) == 127
    assert bool(((dequantize(s, "int8", torch.float64) - w).abs() <= s["_scale"][..., None] / 2 + 1e-15).all())
    assert float(s["_scale"][0, 0]) == 1 and not s[""][0, 0].any()
    s = quantize_tensor(w, "int4", 32)
    assert s[""].shape == (3, 16, 32) and s["_scale"].shape == s["_zero"].shape == (3, 16, 2)
    step = s["_scale"].repeat_interleave(32, -1)
    assert bool(((dequantize(s, "int4", torch.float64) - w).abs() <= step / 2 + 1e-15).all())
    assert int(s["_zero"].max()) <= 15 and float(s["_scale"][0, 0, 0]) == 1
    s = quantize_tensor(w, "fp8")
    assert s[""].dtype == torch.float8_e4m3fn and float(s[""].float().abs().max()) == FP8_MAX
    err = (dequantize(s, "fp8", torch.float64) - w).abs()
    assert bool((err <= torch.maximum(w.abs() * 2**-4, s["_scale"][..., None] * 2**-10) * (1 + 1e-6)).all())


def test_int4_layout_is_two_codes_a_byte_low_nibble_first():
    """The documented layout: for a group spanning 0..15 (scale 1, zero 0) the codes are the weights, and byte j
    holds code 2j in its low nibble and 2j+1 in its high one."""
    w = torch.arange(32, dtype=torch.float64).remainder(16).view(1, 32)
    s = quantize_tensor(w, "int4", 16)
    assert s["_scale"].tolist() == [[1.0, 1.0]] and s["_zero"].tolist() == [[0, 0]]
    assert s[""][0, :3].tolist() == [0 | 1 << 4, 2 | 3 << 4, 4 | 5 << 4]


@pytest.mark.parametrize("fmt", ["int8", "fp8"])
def test_linear_kernels_compute_the_dequantized_product(fmt):
    """A float32 CPU call quantizes the activations per row (int8: to max|x|/127 steps, for torch._int_mm; fp8: to
    e4m3, for torch._scaled_mm, as on a GPU); each must equal (rounded x) @ dequantized(W)^T up to float32
    rounding: K * eps * sum|x||w| per output bounds any order of the K products (int8 sums are exact, then three
    float32 roundings), so it holds for AVX2 and AVX-512 kernels alike (about 1e-3 here against outputs of order
    10), while a scale on the wrong axis, a dropped one or unrounded activations are off by far more."""
    g = torch.Generator().manual_seed(1)
    lin = torch.nn.Linear(96, 64, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(64, 96, generator=g))
    q = QuantLinear.of(lin, fmt, None)
    x = torch.randn(2, 5, 96, generator=g)
    w = q.weight_of("weight", torch.float64)
    xs = x.abs().amax(-1, keepdim=True) / (127 if fmt == "int8" else FP8_MAX)
    xr = (x / xs).round() if fmt == "int8" else (x / xs).to(torch.float8_e4m3fn)
    xd = xr.double() * xs.double()
    assert (F.linear(x.double(), w) - F.linear(xd, w)).abs().max() > 1e-2  # the activations' rounding shows
    ref = F.linear(xd, w)
    bound = 96 * torch.finfo(torch.float32).eps * (xd.abs() @ w.abs().t())
    y = q(x)
    assert y.shape == (2, 5, 64) and bool(((y.double() - ref).abs() <= bound + 1e-6).all())
    with pytest.raises(QuantizationError, match="bias-free"):
        QuantLinear.of(torch.nn.Linear(4, 4), fmt, None)


@pytest.mark.parametrize("fmt", ["int8", "int4", "fp8"])
def test_quantized_experts_dequantize_only_what_a_short_pass_uses(fmt):
    """Fewer assignments than experts: the used experts alone are dequantized and the routing renumbered; the
    output is that of the full dequantized set, bit for bit (the same products in the same grouped matmuls)."""
    e = Experts(get_preset("tiny"))
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        e.gate_up_proj.normal_(generator=g)
        e.down_proj.normal_(generator=g)
    q = QuantExperts(e, fmt, 32)
    x, index = torch.randn(2, 64, generator=g), torch.tensor([[5, 2], [2, 7]])
    weights = torch.tensor([[0.7, 0.3], [0.4, 0.6]])
    assert torch.equal(q(x, index, weights), q.routed(x, index, weights, 1, *q.weights()))


@pytest.mark.parametrize("fmt", ["int8", "int4"])
def test_cpu_dequantization_reuses_its_slot_buffer_outside_autograd(fmt):
    """Without autograd a CPU dequantization with a scratch slot writes into that slot's buffer, the same memory
    call after call (grown for a larger weight), with a fresh tensor's values; with autograd on it returns a
    fresh tensor, since a weight saved for the backward pass must not be overwritten; under inference_mode it
    keeps a buffer of its own, so switching modes raises nothing."""
    g = torch.Generator().manual_seed(3)
    small, big = (quantize_tensor(torch.randn(*shape, generator=g), fmt, 16) for shape in ((4, 32), (8, 64)))
    with torch.no_grad():
        a = dequantize(small, fmt, torch.float32, "test")
        assert torch.equal(a, dequantize(small, fmt, torch.float32))
        assert dequantize(small, fmt, torch.float32, "test").data_ptr() == a.data_ptr()
        b = dequantize(big, fmt, torch.float32, "test")
        assert torch.equal(b, dequantize(big, fmt, torch.float32))
        assert dequantize(small, fmt, torch.float32, "test").data_ptr() == b.data_ptr()
    with torch.enable_grad():
        assert dequantize(small, fmt, torch.float32, "test").data_ptr() != b.data_ptr()
    with torch.inference_mode():  # its own buffer (an inference tensor cannot be written outside the mode)
        c = dequantize(small, fmt, torch.float32, "test")
        assert torch.equal(c, a) and c.data_ptr() != b.data_ptr()
    with torch.no_grad():
        assert torch.equal(dequantize(small, fmt, torch.float32, "test"), a)


# per scheme: the mean KL(float || quantized) of a tiny random model's next-token distributions. Measured on
# AVX-512: int8 5e-4, mixed 2e-3, fp8 5e-3, int4 8e-3, set by the formats' steps (not by float32 rounding, 1e-7
# relative, so AVX2 gives the same); the bounds are 4x those, and a broken format moves it by orders of magnitude
KL_BOUND = {"int8": 2e-3, "mixed": 8e-3, "fp8": 2e-2, "int4": 3.2e-2}


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_quantized_presets_equal_quantized_models_stay_close_and_generate(scheme):
    """A preset drawn quantized (each weight quantized as it is drawn) is the float preset quantized, tensor for
    tensor; its logits stay near the float model's and it generates."""
    float_model = DiffusionGemma.from_pretrained("tiny").eval()
    model = DiffusionGemma.from_pretrained("tiny", quantize=scheme).eval()
    assert equal_states(model, quantize_(DiffusionGemma.from_pretrained("tiny"), scheme))
    assert model.quantization["scheme"] == scheme
    ids = torch.randint(3, model.config.vocab_size, (2, 20), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        before = float_model.logits(float_model.encode(ids, float_model.new_cache(2, 64)))
        after = model.logits(model.encode(ids, model.new_cache(2, 64)))
    kl = F.kl_div(after.log_softmax(-1), before.log_softmax(-1), log_target=True, reduction="none").sum(-1)
    assert 0 < float(kl.mean()) < KL_BOUND[scheme], float(kl.mean())
    out = model.generate(ids[:1], max_new_tokens=32, max_denoising_steps=4, seed=0)
    assert out.sequences.shape == (1, 20 + 32)
    with pytest.raises(QuantizationError, match="already quantized"):
        quantize_(model, "int8")


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_quantized_checkpoints_round_trip(scheme, tmp_path):
    """Quantizing while loading a float checkpoint equals quantizing it once loaded; the quantized checkpoint
    names its scheme in config.json, loads back to the same tensors (codes in their own dtypes, scales in the
    requested dtype) and refuses a second quantization."""
    DiffusionGemma.from_pretrained("tiny", seed=3).save_pretrained(tmp_path / "float")
    model = DiffusionGemma.from_pretrained(tmp_path / "float", quantize=scheme)
    assert equal_states(model, quantize_(DiffusionGemma.from_pretrained(tmp_path / "float"), scheme))
    model.save_pretrained(tmp_path / "q")
    record = json.loads((tmp_path / "q" / "config.json").read_text())["quantization_config"]
    assert record == {"quant_method": "dgemma", "format_version": 1, **model.quantization}
    back = DiffusionGemma.from_pretrained(tmp_path / "q")
    assert equal_states(back, model) and back.quantization == model.quantization
    half = DiffusionGemma.from_pretrained(tmp_path / "q", dtype=torch.bfloat16)
    lin = half.layers[0].self_attn.q_proj
    assert lin.weight.dtype == {"int8": torch.int8, "int4": torch.uint8, "fp8": torch.float8_e4m3fn,
                                "mixed": torch.int8}[scheme] and lin.weight_scale.dtype == torch.bfloat16
    assert lin.to(torch.float32).weight.dtype == lin.weight.dtype  # .to(dtype) moves scales, never codes
    with pytest.raises(CheckpointError, match=f"already quantized \\({scheme}\\)"):
        DiffusionGemma.from_pretrained(tmp_path / "q", quantize="int8")


def _corrupt(directory: Path, key: str, value) -> None:
    tensors = load_file(str(directory / "model.safetensors"))
    if value is None:
        del tensors[key]
    else:
        tensors[key] = value(tensors[key])
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})


@pytest.mark.parametrize("key, value, message", [
    ("model.decoder.layers.0.mlp.up_proj.weight_scale", None, "missing key .*up_proj.weight_scale"),
    ("model.decoder.layers.0.mlp.up_proj.weight_scale", lambda t: t.index_fill(0, torch.tensor([3]), float("nan")),
     "up_proj.weight_scale holds a scale that is not a positive finite number"),
    ("model.decoder.layers.1.experts.down_proj_scale", lambda t: -t, "down_proj_scale holds a scale that is not"),
    ("model.decoder.layers.1.experts.down_proj_zero", lambda t: t + 16, "zero points in 0..15"),
    ("model.decoder.layers.0.self_attn.q_proj.weight", lambda t: t.float(),
     "q_proj.weight is stored as float32, but int8 weights are int8"),
])
def test_a_corrupt_quantized_checkpoint_fails_naming_the_tensor(tmp_path, key, value, message):
    DiffusionGemma.from_pretrained("tiny", quantize="mixed").save_pretrained(tmp_path)
    _corrupt(tmp_path, key, value)
    with pytest.raises(CheckpointError, match=message):
        DiffusionGemma.from_pretrained(tmp_path)


def test_bad_schemes_group_sizes_devices_and_configs_are_refused(tmp_path, monkeypatch):
    tiny = DiffusionGemma.from_pretrained("tiny", device="meta")
    with pytest.raises(QuantizationError, match="unknown quantization scheme 'int3'"):
        resolve(tiny, "int3")
    with pytest.raises(QuantizationError, match="group size 48 does not divide the width 32 of layers.0.experts"):
        resolve(tiny, "int4", 48)
    with pytest.raises(QuantizationError, match="no int4 group size of 128, 64, 32 divides"):
        resolve(_odd_model(), "int4")
    assert resolve(tiny, "int8")["group_size"] is None and resolve(tiny, "mixed")["group_size"] == 32
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    with pytest.raises(QuantizationError, match="fp8 needs a GPU of compute capability 8.9 or newer; cuda has 8.0"):
        check_fp8_device("cuda")
    with pytest.raises(QuantizationError, match="fp8 needs a GPU"):
        resolve(tiny, "fp8", device="cuda")
    check_fp8_device("cpu")  # the CPU has torch's fp8 matmul
    DiffusionGemma.from_pretrained("tiny").save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "fp8", "weight_block_size": [128, 128]}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="quant_method 'fp8'; dgemma reads its own quantized layout only"):
        DiffusionGemma.from_pretrained(tmp_path)


def _odd_model():
    """A meta model whose expert width (24) no int4 group of 128, 64 or 32 divides."""
    from dgemma.checkpoint import build_model
    return build_model(DiffusionGemma, get_preset("tiny").replace(moe_intermediate_size=24), torch.float32)


def test_the_released_shape_is_mostly_quantized_and_mixed_fits_16_gib():
    """On the meta device (nothing allocated): at least 88% of the text weights quantized in every scheme (the
    experts hold most), and mixed, with int4 groups of 64, at most 16 GiB with the vision tower."""
    model = DiffusionGemma.from_pretrained("diffusiongemma-26b-a4b", dtype=torch.bfloat16, device="meta")
    full = weight_stats(model)
    assert full["quantized_fraction"] == 0 and full["weight_bytes"] > 47 * 2**30
    for scheme in SCHEMES:
        q = DiffusionGemma.from_pretrained("diffusiongemma-26b-a4b", dtype=torch.bfloat16, device="meta",
                                           quantize=scheme)
        stats = weight_stats(q)
        assert stats["quantized_fraction"] >= 0.88, (scheme, stats)
        if scheme == "mixed":
            assert q.quantization["group_size"] == 64 and stats["weight_bytes"] <= 16 * 2**30, stats


def test_info_counts_what_quantizing_gives(tmp_path, capsys):
    """`dgemma info MODEL --quantize S --json`, counted on the meta device, equals the stats of the model really
    quantized from bf16; a quantized checkpoint reports its own scheme and refuses --quantize."""
    assert main(["info", "tiny", "--quantize", "int4", "--json"]) == 0
    real = DiffusionGemma.from_pretrained("tiny", dtype=torch.bfloat16, quantize="int4")
    assert json.loads(capsys.readouterr().out)["quantized"] == {"scheme": "int4", "group_size": 32,
                                                                **weight_stats(real)}
    real.save_pretrained(tmp_path)
    assert main(["info", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["quantized"]["weight_bytes"] == weight_stats(real)["weight_bytes"]
    assert main(["info", str(tmp_path), "--quantize"]) == 2
    assert "already quantized (int4)" in capsys.readouterr().err


def test_the_quantize_command_writes_a_checkpoint_generate_reads(text_ckpt, tmp_path, capsys):
    """dgemma quantize writes DIR whole (tokenizer included); generating from it gives the tokens of quantizing
    while loading; an existing DIR, a quantized source and a failing write leave nothing behind. The command
    leaves the calling process's autograd on (it once switched it off for every later test in the process)."""
    out = tmp_path / "q"
    assert main(["quantize", str(text_ckpt), "--scheme", "mixed", "--out", str(out), "--quiet", "--json",
                 "--dtype", "float32"]) == 0
    assert torch.is_grad_enabled()
    record = json.loads(capsys.readouterr().out)
    assert record["scheme"] == "mixed" and record["out"] == str(out)
    assert record["weight_bytes"] == weight_stats(DiffusionGemma.from_pretrained(out))["weight_bytes"]
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "generation_config.json", "model.safetensors",
                                                     "tokenizer.json"]
    gen = ["generate", "def f(x):", "--max-new-tokens", "16", "--steps", "3", "--seed", "0", "--json"]
    assert main(gen + ["--model", str(out)]) == 0
    from_dir = json.loads(capsys.readouterr().out)["text"]
    assert main(gen + ["--model", str(text_ckpt), "--quantize", "mixed"]) == 0
    assert json.loads(capsys.readouterr().out)["text"] == from_dir
    assert main(["quantize", str(text_ckpt), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["quantize", str(out), "--out", str(tmp_path / "again")]) == 2
    assert "already quantized (mixed)" in capsys.readouterr().err


def test_a_failed_quantize_leaves_no_directory(text_ckpt, tmp_path, capsys, monkeypatch):
    def broken(self, path, max_shard_bytes=0):
        (Path(path) / "model.safetensors").write_bytes(b"half")
        raise OSError("disk full")
    monkeypatch.setattr(DiffusionGemma, "save_pretrained", broken)
    assert main(["quantize", str(text_ckpt), "--out", str(tmp_path / "q"), "--quiet"]) == 1
    assert "disk full" in capsys.readouterr().err and list(tmp_path.iterdir()) == []
