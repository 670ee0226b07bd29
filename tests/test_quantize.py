"""int8 weight-only quantization (dgemma.quantize): the rounding bound per layer, the CPU kernel against the
dequantized weights, a quantized model's logits near the original's, and the quantized share of the released shape
counted on the meta device."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dgemma import DiffusionGemma
from dgemma.config import get_preset
from dgemma.quantize import Int8Linear, int8_rows, quantize_, weight_stats


def test_int8_rows_round_each_weight_to_half_a_step():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 16, 40, generator=g, dtype=torch.float64)
    w[0, 0] = 0  # an all-zero row
    q, scale = int8_rows(w)
    assert q.dtype == torch.int8 and scale.shape == (3, 16) and int(q.abs().max()) == 127
    assert bool(((q.double() * scale[..., None] - w).abs() <= scale[..., None] / 2 + 1e-15).all())
    assert torch.equal(q[0, 0], torch.zeros(40, dtype=torch.int8))


def test_int8_linear_kernel_equals_the_dequantized_weights():
    """float32 on a CPU goes through torch._weight_int8pack_mm; it must compute x @ (q * scale)^T up to float32
    summation rounding: K * eps * sum|x||w| per output is the worst-case bound for any order of the K products, so
    it holds for the AVX2 and the AVX-512 kernels alike (here about 1e-3 against outputs of order 10), while a
    wrong scale axis or a dropped scale is off by O(1) and fails it."""
    g = torch.Generator().manual_seed(1)
    lin = torch.nn.Linear(96, 64, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(64, 96, generator=g))
    q = Int8Linear(lin)
    x = torch.randn(2, 5, 96, generator=g)
    y = q(x)
    ref = F.linear(x.double(), q.weight(torch.float64))
    bound = 96 * torch.finfo(torch.float32).eps * (x.double().abs() @ q.weight(torch.float64).abs().t())
    assert y.shape == (2, 5, 64) and bool(((y.double() - ref).abs() <= bound + 1e-6).all())
    # and the quantization error itself is within half a step per weight
    err = (F.linear(x.double(), lin.weight.double()) - ref).abs()
    assert bool((err <= x.double().abs() @ (q.scale.double()[:, None] / 2).expand(64, 96).t() + 1e-9).all())
    with pytest.raises(ValueError, match="bias-free"):
        Int8Linear(torch.nn.Linear(4, 4))


def test_a_quantized_model_stays_close_and_generates(tmp_path):
    model = DiffusionGemma.from_pretrained("tiny").eval()
    ids = torch.randint(3, model.config.vocab_size, (2, 20), generator=torch.Generator().manual_seed(2))
    cache = model.new_cache(2, 64)
    with torch.no_grad():
        before = model.logits(model.encode(ids, cache))
        quantize_(model, "int8")
        after = model.logits(model.encode(ids, model.new_cache(2, 64)))
    kl = F.kl_div(after.log_softmax(-1), before.log_softmax(-1), log_target=True, reduction="none").sum(-1)
    # measured 5e-4 (AVX-512): the int8 steps of max|w| / 127 set it, not the machine's float32 rounding (1e-7
    # relative), so AVX2 gives the same; a scale on the wrong axis or a lost scale moves it by orders of magnitude
    assert float(kl.mean()) < 1e-2, float(kl.mean())
    out = model.generate(ids[:1], max_new_tokens=32, max_denoising_steps=4, seed=0)
    assert out.sequences.shape == (1, 20 + 32)
    with pytest.raises(ValueError, match="already quantized"):
        quantize_(model, "int8")
    with pytest.raises(ValueError, match="int8-quantized weights is not supported yet"):
        model.save_pretrained(tmp_path / "q")
    assert not (tmp_path / "q").exists()
    with pytest.raises(ValueError, match="unknown quantization scheme 'int3'"):
        quantize_(DiffusionGemma.from_pretrained("tiny"), "int3")


def test_the_released_shape_is_mostly_quantized_and_counted_without_memory():
    """On the meta device (nothing allocated): at least 88% of the weights quantized (the experts hold most), and
    the bytes are int8's plus bf16 for the rest and the scales."""
    model = DiffusionGemma.from_pretrained("diffusiongemma-26b-a4b", dtype=torch.bfloat16, device="meta")
    full = weight_stats(model)
    assert full["quantized_fraction"] == 0
    stats = weight_stats(quantize_(model, "int8"))
    assert stats["quantized_fraction"] >= 0.88, stats
    n = get_preset("diffusiongemma-26b-a4b").num_parameters()
    assert stats["weight_bytes"] < 0.6 * full["weight_bytes"] and full["weight_bytes"] >= 2 * n * 0.99


def test_info_counts_what_quantizing_gives():
    """`dgemma info MODEL --quantize int8 --json`, counted on the meta device, equals the stats of the model really
    quantized from bf16."""
    import json
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "dgemma.cli", "info", "tiny", "--quantize", "int8", "--json"],
                         capture_output=True, text=True, check=True).stdout
    real = weight_stats(quantize_(DiffusionGemma.from_pretrained("tiny", dtype=torch.bfloat16), "int8"))
    assert json.loads(out)["quantized"] == {"scheme": "int8", **real}
