"""Quantized weights (issue #23): int8, int4, fp8 and `mixed`, in memory and in checkpoints.

A scheme names a format for each kind of weight; only the projections of the attention and the dense MLP
("linear") and the routed experts' 3-D tensors ("experts", 88% of the released model's text weights) are quantized.
The embeddings (and so the tied head), the routers, the norms, the self-conditioning block and the vision tower
keep the model's dtype: a small share of the bytes, and the head's and router's rounding moves every logit and
every routing.

Formats, for a weight (..., N, K) (N outputs, K inputs; experts carry a leading expert axis), and how a checkpoint
stores them (the same names in memory; see docs/quantization.md):
- int8: `W` int8 (..., N, K) and `W_scale` (..., N): symmetric per output row, w ~ q * scale, max|w| -> 127.
- int4: `W` uint8 (..., N, K/2), two weights a byte (the even k in the low nibble), `W_scale` and `W_zero` uint8
  (..., N, K/G) per group of G inputs: w ~ (q - zero) * scale, the group's range (with 0) over the codes 0..15.
- fp8: `W` float8_e4m3fn (..., N, K), `W_scale` (..., N): w ~ q * scale, max|w| -> 448.
Scales are held in the model's dtype.

Kernels (bench/quant_cpu.py measures them): a CPU int8 linear quantizes its activations per row to int8 as well
and runs the int8 matmul `torch._int_mm` (on the measured AVX-512 CPU faster than bf16 at every token count, where
the weight-only `torch._weight_int8pack_mm` is 2-3x slower than bf16 from 16 tokens up); an fp8 linear runs
`torch._scaled_mm` with the activations quantized per row to fp8 (CUDA needs compute capability 8.9+; the CPU has
the same op); int4 linears, int8 linears on GPUs, float64 and every expert tensor are dequantized for the call.
The experts are dequantized one layer per pass, so the grouped matmul stays one grouped matmul. On the CPU a
dequantized weight is written into a reused scratch buffer: a fresh tensor of that size costs more in page faults
than the conversion itself (3.4 against 0.09 ns a weight, measured).
"""

from __future__ import annotations

import math
import threading

import torch
import torch.nn.functional as F
from torch import nn

from .moe import Experts

FORMATS = ("int8", "int4", "fp8")
SCHEMES = {"int8": {"linear": "int8", "experts": "int8"}, "int4": {"linear": "int4", "experts": "int4"},
           "fp8": {"linear": "fp8", "experts": "fp8"}, "mixed": {"linear": "int8", "experts": "int4"}}
DEFAULT_SCHEME = "mixed"
SUFFIXES = {"int8": ("", "_scale"), "fp8": ("", "_scale"), "int4": ("", "_scale", "_zero")}
GROUP_SIZES = (128, 64, 32)  # the default int4 group: the largest of these that divides every quantized width
FP8_MAX = 448.0  # the largest float8_e4m3fn
STORE_CHUNK = 1 << 24  # elements quantized at a time
LINEARS = {"self_attn": ("q_proj", "k_proj", "v_proj", "o_proj"), "mlp": ("gate_proj", "up_proj", "down_proj")}


class QuantizationError(ValueError):
    """A scheme, group size, device or quantized tensor that cannot be used; the message names it."""


# --- formats --------------------------------------------------------------------------------------------------

def parts(fmt: str, shape: tuple, group: int | None, dtype: torch.dtype) -> dict[str, tuple[tuple, torch.dtype]]:
    """The stored tensors of a weight of `shape` (..., N, K): suffix -> (shape, dtype)."""
    *lead, N, K = shape
    if fmt == "int8":
        return {"": (shape, torch.int8), "_scale": ((*lead, N), dtype)}
    if fmt == "fp8":
        return {"": (shape, torch.float8_e4m3fn), "_scale": ((*lead, N), dtype)}
    return {"": ((*lead, N, K // 2), torch.uint8), "_scale": ((*lead, N, K // group), dtype),
            "_zero": ((*lead, N, K // group), torch.uint8)}


def quantize_tensor(w: torch.Tensor, fmt: str, group: int | None = None) -> dict[str, torch.Tensor]:
    """Float weights (..., N, K) -> their stored tensors (see `parts`), scales in w's dtype. The integer codes
    are computed with the scale as stored, so dequantizing reproduces what was rounded to."""
    wf = w.float() if w.dtype != torch.float64 else w
    if fmt in ("int8", "fp8"):
        top = 127 if fmt == "int8" else FP8_MAX
        scale = (wf.abs().amax(-1) / top).to(w.dtype)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        x = wf / scale.to(wf.dtype)[..., None]
        q = x.round().clamp_(-127, 127).to(torch.int8) if fmt == "int8" else x.clamp_(-FP8_MAX, FP8_MAX).to(
            torch.float8_e4m3fn)
        return {"": q, "_scale": scale}
    *lead, N, K = w.shape
    g = wf.reshape(*lead, N, K // group, group)
    lo, hi = g.amin(-1).clamp(max=0), g.amax(-1).clamp(min=0)  # the range holds 0, so the zero point is a code
    scale = ((hi - lo) / 15).to(w.dtype)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    s = scale.to(wf.dtype)
    zero = (-lo / s).round().clamp_(0, 15)
    q = ((g / s[..., None]).round() + zero[..., None]).clamp_(0, 15).to(torch.uint8).reshape(*lead, N, K)
    return {"": q[..., 0::2] | (q[..., 1::2] << 4), "_scale": scale, "_zero": zero.to(torch.uint8)}


def dequantize(stored: dict[str, torch.Tensor], fmt: str, dtype: torch.dtype, scratch: str | None = None
               ) -> torch.Tensor:
    """The stored tensors of one weight (suffix -> tensor) -> its (..., N, K) values in `dtype`. One tensor of the
    result's size (with `scratch`, that slot's reused buffer, see `scratch_buffer`), then in-place steps: a layer
    of the released experts is 1 GB in bf16."""
    q, scale = stored[""], stored["_scale"].to(dtype)
    shape = (*q.shape[:-1], q.shape[-1] * (2 if fmt == "int4" else 1))
    out = scratch_buffer(scratch, shape, dtype, q.device)
    if fmt != "int4":
        return out.copy_(q).mul_(scale[..., None])
    codes = out.view(*q.shape, 2)  # (..., N, K/2, 2): the low and high nibbles, cast as they are written
    torch.bitwise_and(q, 15, out=codes[..., 0])
    torch.bitwise_right_shift(q, 4, out=codes[..., 1])
    *lead, N, half, _ = codes.shape
    groups = codes.view(*lead, N, scale.shape[-1], -1)
    groups.sub_(stored["_zero"].to(dtype)[..., None]).mul_(scale[..., None])
    return groups.view(*lead, N, 2 * half)


_scratch = threading.local()  # per thread: slot -> flat buffer


def scratch_buffer(slot: str | None, shape: tuple, dtype: torch.dtype, device) -> torch.Tensor:
    """An uninitialised tensor of `shape`: on the CPU, outside autograd and torch.compile and with a `slot`, a
    view of that slot's buffer, kept per thread and grown as needed (the next call with the slot overwrites it),
    otherwise a new one. A new CPU tensor of a weight's size comes as fresh pages from the OS, each faulted in."""
    device = torch.device(device)
    if slot is None or device.type != "cpu" or torch.is_grad_enabled() or torch.compiler.is_compiling():
        return torch.empty(shape, dtype=dtype, device=device)
    # (a buffer made under inference_mode is an inference tensor: written outside that mode it would raise)
    key, n = (slot, dtype, torch.is_inference_mode_enabled()), math.prod(shape)
    buffers = _scratch.__dict__.setdefault("buffers", {})
    if buffers.get(key) is None or buffers[key].numel() < n:
        buffers[key] = None  # (the old one freed before the new one is made)
        buffers[key] = torch.empty(n, dtype=dtype)
    return buffers[key][:n].view(shape)


def rowwise(x: torch.Tensor, fmt: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Activations (T, K) quantized per row for an int8 or fp8 matmul: the codes and the float32 scales (T, 1)."""
    xs = (x.abs().amax(-1, keepdim=True).float() / (127 if fmt == "int8" else FP8_MAX)).clamp_(min=1e-12)
    xf = x.float() / xs
    return (xf.round_().clamp_(-127, 127).to(torch.int8) if fmt == "int8" else xf.to(torch.float8_e4m3fn)), xs


def check_fp8_device(device) -> None:
    """fp8 matmuls need a CUDA GPU of compute capability 8.9 or newer (or the CPU's own kernel)."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.get_device_capability(device) < (8, 9):
        major, minor = torch.cuda.get_device_capability(device)
        raise QuantizationError(f"fp8 needs a GPU of compute capability 8.9 or newer; {device} has {major}.{minor}"
                                " (use --quantize int8, int4 or mixed)")
    if device.type not in ("cuda", "cpu", "meta"):
        raise QuantizationError(f"fp8 is supported on CUDA (8.9+) and CPU devices, not {device.type}")


# --- modules --------------------------------------------------------------------------------------------------

class Quantized(nn.Module):
    """A module whose weights `names` are held quantized: `store` quantizes float weights into them, `weight`
    dequantizes one."""

    def declare(self, name: str, shape: tuple, fmt: str, group: int | None, dtype: torch.dtype, device) -> None:
        self.formats = {**getattr(self, "formats", {}), name: fmt}
        self.shapes = {**getattr(self, "shapes", {}), name: shape}
        self.group = group
        for suffix, (s, dt) in parts(fmt, shape, group, dtype).items():
            self.register_buffer(name + suffix, torch.empty(s, dtype=dt, device=device))

    def stored(self, name: str) -> dict[str, torch.Tensor]:
        return {suffix: getattr(self, name + suffix) for suffix in SUFFIXES[self.formats[name]]}

    def store(self, name: str, w: torch.Tensor) -> None:
        """Quantize float weights `w` into `name`'s tensors (on w's device), STORE_CHUNK elements at a time along
        the first axis, so the float32 temporaries stay small beside a 1 GB expert tensor."""
        fmt, w = self.formats[name], w.detach()
        out = {suffix: torch.empty(shape, dtype=dtype, device=w.device)
               for suffix, (shape, dtype) in parts(fmt, tuple(w.shape), self.group, w.dtype).items()}
        step = max(1, STORE_CHUNK // max(1, w[0].numel()))
        for i in range(0, w.shape[0], step):
            for suffix, t in quantize_tensor(w[i:i + step], fmt, self.group).items():
                out[suffix][i:i + step] = t
        for suffix, t in out.items():
            self._buffers[name + suffix] = t

    def weight_of(self, name: str, dtype: torch.dtype, scratch: str | None = None) -> torch.Tensor:
        return dequantize(self.stored(name), self.formats[name], dtype, scratch)

    def _apply(self, fn, recurse=True):
        """`.to(dtype)` moves the scales to the new dtype but leaves the codes' dtypes (fp8 is a floating dtype
        that a float conversion would otherwise replace; fp8 -> bf16 -> fp8 is exact)."""
        kinds = {name: self._buffers[name].dtype for name in self.formats}
        result = super()._apply(fn, recurse)
        for name, dtype in kinds.items():
            if self._buffers[name].dtype != dtype:
                self._buffers[name] = self._buffers[name].to(dtype)
        return result


class QuantLinear(Quantized):
    """A bias-free linear layer with quantized weights (buffers `weight`, `weight_scale`[, `weight_zero`])."""

    def __init__(self, out_features: int, in_features: int, fmt: str, group: int | None, dtype, device):
        super().__init__()
        self.declare("weight", (out_features, in_features), fmt, group, dtype, device)

    @classmethod
    def of(cls, linear: nn.Linear, fmt: str, group: int | None) -> "QuantLinear":
        if linear.bias is not None:
            raise QuantizationError("only bias-free linear layers are quantized")
        q = cls(linear.out_features, linear.in_features, fmt, group, linear.weight.dtype, linear.weight.device)
        if not linear.weight.is_meta:
            q.store("weight", linear.weight)
        return q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape, fmt = x.shape, self.formats["weight"]
        x2 = x.reshape(-1, shape[-1])
        scale = self.weight_scale
        if fmt == "int8" and x2.device.type == "cpu" and x2.dtype in (torch.float32, torch.bfloat16):
            xq, xs = rowwise(x2, "int8")  # W8A8: the int32 sums are exact, the two scales applied after
            y = torch._int_mm(xq, self.weight.t()).float().mul_(xs).mul_(scale.float()).to(x2.dtype)
        elif fmt == "fp8" and x2.dtype in (torch.float32, torch.bfloat16) and x2.dtype == scale.dtype and (
                shape[-1] % 16 == 0 and scale.shape[0] % 16 == 0) and (
                x2.device.type == "cpu" or x2.dtype == torch.bfloat16):  # (CUDA's row-wise scaling: bf16 out)
            xq, xs = rowwise(x2, "fp8")  # W8A8, the row scales applied to the output by the kernel
            y = torch._scaled_mm(xq, self.weight.t(), scale_a=xs, scale_b=scale.float()[None],
                                 out_dtype=x2.dtype)
        else:
            y = F.linear(x2, self.weight_of("weight", x2.dtype, scratch="linear"))
        return y.view(*shape[:-1], y.shape[-1])


class QuantExperts(Quantized, Experts):
    """`Experts` with quantized 3-D weights, dequantized once per pass (one layer's experts at a time)."""

    def __init__(self, experts: Experts, fmt: str, group: int | None):
        nn.Module.__init__(self)
        self.aligned = experts.aligned
        for name in ("gate_up_proj", "down_proj"):
            w = getattr(experts, name)
            self.declare(name, tuple(w.shape), fmt, group, w.dtype, w.device)
            if not w.is_meta:
                self.store(name, w)

    def weights(self, used: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The dequantized experts (E, 2I, H), (E, H, I); with `used`, only those experts, in that order."""
        dtype = self.gate_up_proj_scale.dtype

        def pick(name, suffix, t):  # the used experts' stored tensors, gathered into scratch as well
            if used is None:
                return t
            out = scratch_buffer(f"{name}.{suffix}used", (len(used), *t.shape[1:]), t.dtype, t.device)
            return torch.index_select(t, 0, used, out=out)
        return tuple(dequantize({k: pick(name, k, t) for k, t in self.stored(name).items()}, self.formats[name],
                                dtype, scratch=name) for name in ("gate_up_proj", "down_proj"))

    def forward(self, x: torch.Tensor, index: torch.Tensor, weights: torch.Tensor, rows: int = 1) -> torch.Tensor:
        """Fewer assignments than experts (an AR token, a short prefill): only the experts in use are dequantized,
        and the routing renumbered to them (the same products, a fraction of the work)."""
        if index.numel() >= self.gate_up_proj.shape[0] or torch.compiler.is_compiling():
            return super().forward(x, index, weights, rows)
        used = index.unique()  # sorted
        return self.routed(x, torch.searchsorted(used, index), weights, rows, *self.weights(used))


# --- models ---------------------------------------------------------------------------------------------------

def targets(model):
    """(module path, kind, inner width K) of every weight a scheme quantizes, layer by layer."""
    for i, layer in enumerate(model.layers):
        for part, names in LINEARS.items():
            for name in names:
                lin = getattr(getattr(layer, part), name)
                if lin is not None:
                    yield f"layers.{i}.{part}.{name}", "linear", lin.in_features
        yield f"layers.{i}.experts", "experts", layer.experts.gate_up_proj.shape[-1]
        yield f"layers.{i}.experts", "experts", layer.experts.down_proj.shape[-1]


def resolve(model, scheme: str, group_size: int | None = None, device=None) -> dict:
    """The model's `quantization` record for `scheme`: {"scheme", "formats", "group_size"}; checks the scheme,
    an existing quantization, fp8 on the `device` it will run on (default: the model's) and the int4 group size
    against every width it splits."""
    if scheme not in SCHEMES:
        raise QuantizationError(f"unknown quantization scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    if getattr(model, "quantization", None):
        raise QuantizationError(f"the model is already quantized ({model.quantization['scheme']}): quantize the "
                                "original weights instead")
    formats = SCHEMES[scheme]
    widths = {(path, k) for path, kind, k in targets(model) if formats[kind] == "int4"}
    if "fp8" in formats.values():
        check_fp8_device(model.device if device is None else device)
    if not widths:
        group_size = None
    elif group_size is None:
        group_size = next((g for g in GROUP_SIZES if all(k % g == 0 for _, k in widths)), None)
        if group_size is None:
            raise QuantizationError(f"no int4 group size of {', '.join(map(str, GROUP_SIZES))} divides every width "
                                    f"({', '.join(sorted({str(k) for _, k in widths}))}): pass one that does")
    else:
        bad = next(((p, k) for p, k in sorted(widths) if group_size <= 0 or group_size % 2 or k % group_size), None)
        if bad is not None:
            raise QuantizationError(f"int4 group size {group_size} does not divide the width {bad[1]} of {bad[0]}"
                                    " (an even divisor of every width is needed)")
    return {"scheme": scheme, "formats": dict(formats), "group_size": group_size}


def prepare(model, record: dict):
    """Replace the quantized modules by `Quantized` ones (their float weights quantized where the model holds
    real ones, left empty on the meta device for a loader to fill), layer by layer; returns the model."""
    formats, group = record["formats"], record["group_size"]
    for i, layer in enumerate(model.layers):
        for part, names in LINEARS.items():
            module = getattr(layer, part)
            for name in names:
                if getattr(module, name) is not None:
                    setattr(module, name, QuantLinear.of(getattr(module, name), formats["linear"], group))
        layer.experts = QuantExperts(layer.experts, formats["experts"], group)
    model.quantization = dict(record)
    return model


def quantize_(model, scheme: str = DEFAULT_SCHEME, group_size: int | None = None):
    """Quantize a loaded model in place with `scheme` (see the module docstring); returns it."""
    return prepare(model, resolve(model, scheme, group_size))


def weight_stats(model) -> dict:
    """The model's weight bytes (what its state dict holds: parameters and persistent buffers, the vision tower's
    included) and the share of its text weights (by element count of the original weights) held quantized."""
    quantized = total = 0
    for name, t in model.state_dict(keep_vars=True).items():
        if name.startswith("vision."):
            continue
        module, _, leaf = name.rpartition(".")
        owner = model.get_submodule(module)
        if isinstance(owner, Quantized) and leaf in owner.formats:
            n = t.numel() * (2 if owner.formats[leaf] == "int4" else 1)
            quantized += n
            total += n
        elif not isinstance(owner, Quantized):
            total += t.numel()
    return {"weight_bytes": sum(t.numel() * t.element_size() for t in model.state_dict(keep_vars=True).values()),
            "quantized_fraction": quantized / total}


GROUP_HELP = "inputs per int4 group (default: the largest of 128, 64, 32 that divides every width)"


def add_quantize_args(p, verb: str = "quantize the weights while loading") -> None:
    """--quantize [SCHEME] and --group-size, the same on every command that loads a model."""
    p.add_argument("--quantize", nargs="?", const=DEFAULT_SCHEME, choices=list(SCHEMES), default=None,
                   metavar="SCHEME", help=f"{verb}: int8 (per output channel; a CPU quantizes the activations "
                   "per row too, for int8 matmuls), int4 (groups with a scale and zero point), fp8 (e4m3 per row, "
                   "GPUs of compute capability 8.9+ and CPUs) or mixed "
                   f"(int4 experts, int8 attention and dense MLP); --quantize alone means {DEFAULT_SCHEME} "
                   "(default: off)")
    p.add_argument("--group-size", type=int, default=None, help=GROUP_HELP)
