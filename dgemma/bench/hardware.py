"""What the machine does: timing that waits for the device, peak memory, and the memory bandwidth and matmul rate
measured on the spot, from which the roofline floor of a denoising step follows (bytes touched over bandwidth,
FLOPs over the matmul rate)."""

from __future__ import annotations

import contextlib
import math
import os
import platform
import statistics
import threading
import weakref
import time
from dataclasses import dataclass

import torch

from ..config import FULL, ModelConfig


# ---------------------------------------------------------------------------------------------------------------
# timing and memory helpers
# ---------------------------------------------------------------------------------------------------------------
def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, reps: int = 3, warmup: int = 1) -> tuple[float, object]:
    """Median wall seconds of `fn()` over `reps` runs after `warmup` runs; also returns the last result."""
    out = None
    for _ in range(warmup):
        out = fn()
    sync(device)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_rss_bytes() -> int:
    """The process's peak resident set size so far (Linux: VmHWM)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError):
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakMemory(contextlib.AbstractContextManager):
    """Peak memory during a block: CUDA's allocator peak, or on CPU the peak resident set size sampled every
    2 ms by a thread. `extra` is the peak minus the level at entry (what the block itself added)."""

    def __init__(self, device):
        self.cuda = torch.device(device).type == "cuda"
        self.peak = self.start = 0

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
        else:
            self.start = self.peak = _rss_bytes()
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def _poll(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _rss_bytes())

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, _rss_bytes())
        return False

    @property
    def extra(self) -> int:
        return max(0, self.peak - self.start)


class TensorPeak(torch.utils._python_dispatch.TorchDispatchMode):
    """Peak bytes of the tensors made inside a block and alive at the same time (any device, exact, unlike a
    resident-set sample): each new storage an op returns counts until the last tensor over it is freed."""

    def __enter__(self):
        self.live = self.peak = 0
        self.refs: dict[int, list] = {}  # data pointer -> [bytes, tensors alive over it]
        return super().__enter__()

    def _release(self, ptr: int) -> None:
        ref = self.refs[ptr]
        ref[1] -= 1
        if ref[1] == 0:
            self.live -= ref[0]
            del self.refs[ptr]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        given = {a.untyped_storage().data_ptr() for a in torch.utils._pytree.tree_leaves((args, kwargs))
                 if isinstance(a, torch.Tensor)}
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr():
                ptr = t.untyped_storage().data_ptr()
                if ptr in given and ptr not in self.refs:  # a view of a tensor made before the block
                    continue
                if ptr not in self.refs:
                    self.refs[ptr] = [t.untyped_storage().nbytes(), 0]
                    self.live += self.refs[ptr][0]
                    self.peak = max(self.peak, self.live)
                self.refs[ptr][1] += 1
                weakref.finalize(t, self._release, ptr)
        return out


# ---------------------------------------------------------------------------------------------------------------
# the machine: memory bandwidth and matmul rate, measured on the spot
# ---------------------------------------------------------------------------------------------------------------
def measure_bandwidth(device, nbytes: int | None = None, reps: int = 5) -> float:
    """Bytes/s of a large device-to-device copy (read + write counted), best of `reps`."""
    dev = torch.device(device)
    nbytes = nbytes or (1 << 30 if dev.type == "cuda" else 256 << 20)
    src = torch.ones(nbytes // 4, dtype=torch.float32, device=dev)
    dst = torch.empty_like(src)
    best = math.inf
    for _ in range(reps + 1):
        sync(dev)
        t = time.perf_counter()
        dst.copy_(src)
        sync(dev)
        best = min(best, time.perf_counter() - t)
    return 2 * nbytes / best


def measure_matmul(device, dtype: torch.dtype, max_seconds: float = 2.0, shapes=()) -> dict:
    """Best FLOP/s over square matmuls of growing size (until one takes a tenth of `max_seconds` or the sweep has
    spent it) and any model-shaped `shapes` (m, k, n). Returns the best rate and the sweep."""
    dev = torch.device(device)
    results, spent = [], 0.0

    def one(m, k, n):
        nonlocal spent
        a = torch.randn(m, k, device=dev).to(dtype)
        b = torch.randn(k, n, device=dev).to(dtype)
        sync(dev)
        t0 = time.perf_counter()
        torch.matmul(a, b)  # warm-up
        sync(dev)
        first = time.perf_counter() - t0
        reps = max(1, min(10, int(0.1 * max_seconds / max(first, 1e-6))))
        t = time.perf_counter()
        for _ in range(reps):
            torch.matmul(a, b)
        sync(dev)
        per = (time.perf_counter() - t) / reps
        spent += first + per * reps
        results.append({"shape": [m, k, n], "seconds": per, "flops_per_s": 2 * m * k * n / per})
        return per

    for n in (128, 256, 512, 1024, 2048, 4096, 8192):
        if one(n, n, n) > 0.1 * max_seconds or spent > max_seconds:
            break
    for m, k, n in shapes:
        one(m, k, n)
    best = max(results, key=lambda r: r["flops_per_s"])
    return {"flops_per_s": best["flops_per_s"], "best_shape": best["shape"],
            "dtype": str(dtype).replace("torch.", ""), "sweep": results}


def machine_description(device) -> str:
    dev = torch.device(device)
    if dev.type == "cuda":
        return f"{torch.cuda.get_device_name(dev)} (CUDA {torch.version.cuda}), torch {torch.__version__}"
    cpu = platform.processor() or "cpu"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        flags = next((line for line in open("/proc/cpuinfo") if line.startswith("flags")), "")
        isa = [f for f in ("avx512f", "avx512_bf16", "amx_bf16", "avx2") if f" {f}" in flags]
    except OSError:
        isa = []
    return (f"{cpu}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, ISA: {' '.join(isa) or '?'}; "
            f"torch {torch.__version__}")


# ---------------------------------------------------------------------------------------------------------------
# roofline arithmetic
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Floor:
    weight_bytes: float  # weights a forward touches
    kv_bytes: float  # cached keys/values it reads
    flops: float
    memory_s: float
    compute_s: float

    @property
    def seconds(self) -> float:
        return max(self.memory_s, self.compute_s)

    @property
    def bound(self) -> str:
        return "memory" if self.memory_s >= self.compute_s else "compute"

    def as_dict(self) -> dict:
        return {"weight_bytes": self.weight_bytes, "kv_bytes": self.kv_bytes, "flops": self.flops,
                "memory_s": self.memory_s, "compute_s": self.compute_s, "seconds": self.seconds, "bound": self.bound}


def experts_hit(num_experts: int, top_k: int, tokens: int) -> float:
    """Expected number of distinct experts chosen by `tokens` tokens routing top-k uniformly at random."""
    return num_experts * (1.0 - (1.0 - top_k / num_experts) ** tokens)


def forward_cost(config: ModelConfig, batch: int, new_tokens: int, context: int, bytes_per_param: float,
                 decoder: bool = True, kv_bytes_per_elem: float | None = None) -> tuple[float, float, float]:
    """(weight bytes touched, KV bytes read, FLOPs) of one forward over `new_tokens` tokens per row that attend to
    `context` cached tokens per row. `decoder` adds the self-conditioning block and its soft-embedding product
    (a denoising step after the first); the tied head over the full vocabulary is counted in both."""
    kv_bytes_per_elem = bytes_per_param if kv_bytes_per_elem is None else kv_bytes_per_elem
    H, V, T = config.hidden_size, config.vocab_size, batch * new_tokens
    weights = V * H + H  # embedding / tied head (read once), final norm
    flops = 2.0 * T * V * H  # head
    if decoder:
        sc = H + 3 * H * config.intermediate_size
        weights += sc
        flops += 2.0 * T * 3 * H * config.intermediate_size + 2.0 * T * V * H  # MLP + soft embeddings @ E
    hit = experts_hit(config.num_experts, config.top_k_experts, T)
    kv = 0.0
    for layer in range(config.num_layers):
        shared, expert = config.layer_parameters(layer)
        weights += shared + hit * expert
        flops += 2.0 * T * (shared + config.top_k_experts * expert)
        D, kvh = config.layer_head_dim(layer), config.layer_kv_heads(layer)
        seen = context if config.layer_types[layer] == FULL else min(context, config.sliding_window - 1)
        keys = seen + new_tokens  # decoder: cache + the canvas (bidirectional); encoder: causal, ~ the same bound
        kv += batch * kvh * seen * D * (1 if config.layer_types[layer] == FULL else 2) * kv_bytes_per_elem
        flops += 2.0 * 2 * T * config.num_heads * D * keys  # QK^T and PV
    return weights * bytes_per_param, kv, flops


def step_floor(config: ModelConfig, batch: int, canvas: int, context: int, bytes_per_param: float,
               bandwidth: float, flops_per_s: float, decoder: bool = True,
               kv_bytes_per_elem: float | None = None) -> Floor:
    """`bytes_per_param`: of the weights (quantized: their average); `kv_bytes_per_elem`: of the KV cache
    (default the same)."""
    w, kv, f = forward_cost(config, batch, canvas, context, bytes_per_param, decoder=decoder,
                            kv_bytes_per_elem=kv_bytes_per_elem)
    return Floor(w, kv, f, (w + kv) / bandwidth, f / flops_per_s)
