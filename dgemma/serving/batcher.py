"""Continuous batching at denoising-step granularity, on top of the model's building blocks.

One background thread owns the model. Each request ("row") holds a slot of a slot-based KV cache with its own
length, its own canvas, step counter, self-conditioning input and `torch.Generator`. Every loop iteration:

1. admit waiting requests into free slots and prefill them (one encoder pass each, batch 1, into their slot);
2. run ONE decoder pass over the canvases of every running row (positions and attention masks built from
   per-row lengths; each row's canvas keys go to scratch positions just past its committed tokens in its own
   cache row, never committed, so attention reads the cache in place);
3. per row: temperature, sampling, acceptance and renoising with the row's own generator, in exactly the order
   `Engine.stream` draws them for a batch of one — so a request's tokens equal `model.generate(seed=s)` on its
   own, up to float rounding of batched matmuls (exactly, with lock_after=0, whenever rounding agrees);
4. rows whose canvas is done commit it (stop tokens applied), encode it into their slot and start the next
   canvas, or finish and free the slot at once.

Early streaming ("locking"): with `lock_after = k > 0`, the leading canvas positions that the sampler kept this
step, or whose argmax has been unchanged for k steps, are locked: clamped like infill's suffix (zero entropy,
never renoised, committed as is) and emitted right away. Locked tokens are never contradicted. Locking changes
what the sampler sees, so with k > 0 outputs differ from `model.generate` (but stay a function of the seed and
the request only); k = 0 turns it off and the text then arrives once per committed canvas.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass, field

import torch

from ..config import SLIDING
from ..engine import GenerationConfig, advance, apply_stop_tokens, seeded_generator, temperature_at
from ..model import DiffusionGemma
from ..sampling import step_stats

log = logging.getLogger("dgemma.serving")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class QueueFullError(RuntimeError):
    pass


class EngineDeadError(RuntimeError):
    pass


@dataclass
class SamplingParams:
    """A request's decoding settings: the engine's config (its max_new_tokens is the request's max_tokens, its
    eos_token_id the stop ids) plus what only a request has."""
    gen: GenerationConfig = field(default_factory=GenerationConfig)
    seed: int | None = None
    drafts: bool = False  # stream the denoising drafts


@dataclass
class Request:
    """What the HTTP side submits; events come back through `emit` (called from the engine thread)."""
    prompt: list[int]
    params: SamplingParams
    emit: callable  # emit(kind, payload): "tokens" (list[int]), "draft" (dict), "done" (dict), "error" (str)
    suffix: list[int] | None = None  # infill: clamped on the first canvas after a gap of max_tokens positions
    cancelled: bool = False
    submitted: float = field(default_factory=time.monotonic)


class Row:
    """A running request: its slot, its cache length and its denoising state."""

    def __init__(self, req: Request, slot: int, model: DiffusionGemma):
        p = req.params
        self.req, self.slot = req, slot
        self.cfg = dataclasses.replace(p.gen, pad_token_id=model.config.pad_token_id)
        self.gen = seeded_generator(p.seed, model.device)
        self.stop = torch.tensor(self.cfg.eos_token_id, dtype=torch.long, device=model.device)
        L = model.config.canvas_length
        self.n_canvases = 1 if req.suffix is not None else math.ceil(self.cfg.max_new_tokens / L)
        self.length = 0
        self.canvas_index = -1
        self.out: list[int] = []  # committed and locked tokens, stop token included, pads dropped
        self.passes = 0
        self.finish_reason = None
        self.stopped = False


class BatchEngine:
    def __init__(self, model: DiffusionGemma, max_batch: int = 8, max_queue: int = 64,
                 context_length: int | None = None, lock_after: int = 2):
        self.model = model.eval()
        cfg = model.config
        self.L, self.V = cfg.canvas_length, cfg.vocab_size
        self.max_batch, self.max_queue = max_batch, max_queue
        self.context_length = context_length or min(cfg.max_position_embeddings, 8192)
        self.lock_after = lock_after
        T = self.context_length + self.L  # room for the committed tokens of a full context
        dev, dt = model.device, model.dtype
        self.keys = [torch.zeros(max_batch, cfg.layer_kv_heads(i), T, cfg.layer_head_dim(i), dtype=dt, device=dev)
                     for i in range(cfg.num_layers)]
        self.values = [torch.zeros_like(k) for k in self.keys]
        self.free = list(range(max_batch - 1, -1, -1))
        self.rows: list[Row] = []
        self.inbox: queue.Queue = queue.Queue()
        self.waiting: list[Request] = []
        self.lock = threading.Lock()
        self.pending = 0  # submitted, not yet admitted
        self.wake = threading.Event()
        self.stopping = False
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, name="dgemma-engine", daemon=True)
        # metrics
        self.m = {"requests_total": 0, "requests_finished": 0, "requests_cancelled": 0, "requests_rejected": 0,
                  "requests_failed": 0, "prompt_tokens": 0, "generation_tokens": 0, "decoder_passes": 0,
                  "steps": 0, "row_steps": 0}
        self.step_hist = Histogram(LATENCY_BUCKETS)
        self.request_hist = Histogram(LATENCY_BUCKETS)
        self.ttft_hist = Histogram(LATENCY_BUCKETS)

    # --- public, thread-safe -------------------------------------------------------------------------------
    def start(self):
        self.thread.start()
        return self

    def shutdown(self, timeout: float = 5.0):
        self.stopping = True
        self.wake.set()
        if self.thread.is_alive() and threading.current_thread() is not self.thread:
            self.thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self.thread.is_alive() and self.error is None

    def submit(self, req: Request) -> None:
        if not self.alive:
            raise EngineDeadError("the engine loop is not running")
        with self.lock:
            if self.pending >= self.max_queue:
                self.m["requests_rejected"] += 1
                raise QueueFullError(f"the server is busy: {self.pending} requests are waiting (max {self.max_queue})")
            self.pending += 1
            self.m["requests_total"] += 1
        self.inbox.put(req)
        self.wake.set()

    def cancel(self, req: Request) -> None:
        req.cancelled = True
        self.wake.set()

    def counts(self) -> tuple[int, int]:
        """(running, waiting)."""
        return len(self.rows), self.pending

    # --- the loop -------------------------------------------------------------------------------------------
    def _loop(self):
        try:
            with torch.no_grad():
                while not self.stopping:
                    self._admit()
                    if not self.rows:
                        self.wake.wait(0.05)
                        self.wake.clear()
                        continue
                    self._step()
        except BaseException as e:  # noqa: BLE001 - a dead loop must be visible to /health
            log.exception("engine loop died")
            self.error = e
            for row in self.rows:
                row.req.emit("error", f"engine failure: {e}")
            while True:
                try:
                    self.inbox.get_nowait().emit("error", f"engine failure: {e}")
                except queue.Empty:
                    break
            for req in self.waiting:
                req.emit("error", f"engine failure: {e}")

    def _admit(self):
        while True:
            try:
                self.waiting.append(self.inbox.get_nowait())
            except queue.Empty:
                break
        keep = []
        for req in self.waiting:
            if req.cancelled:
                with self.lock:
                    self.pending -= 1
                self.m["requests_cancelled"] += 1
                continue
            if not self.free:
                keep.append(req)
                continue
            with self.lock:
                self.pending -= 1
            try:
                self.free.sort(reverse=True)  # lowest slot first: running rows stay contiguous more often
                self._start(req, self.free.pop())
            except Exception as e:  # noqa: BLE001 - one bad request must not kill the loop
                log.exception("request failed at prefill")
                self.m["requests_failed"] += 1
                req.emit("error", str(e))
        self.waiting = keep

    def _start(self, req: Request, slot: int):
        row = Row(req, slot, self.model)
        self.m["prompt_tokens"] += len(req.prompt)
        try:
            self._encode(row, torch.tensor(req.prompt, dtype=torch.long, device=self.model.device))
            self._new_canvas(row)
        except Exception:
            self.free.append(slot)
            raise
        self.rows.append(row)

    def _new_canvas(self, row: Row):
        L, dev = self.L, self.model.device
        row.canvas_index += 1
        row.current = torch.randint(0, self.V, (1, L), device=dev, generator=row.gen)
        row.fixed = None
        if row.canvas_index == 0 and row.req.suffix is not None:
            g = row.cfg.max_new_tokens
            part = torch.tensor(row.req.suffix[:L - g], dtype=torch.long, device=dev)
            row.current = torch.zeros(1, L, dtype=torch.long, device=dev)
            row.current[0, g:g + len(part)] = part
            row.fixed = torch.zeros(1, L, dtype=torch.bool, device=dev)
            row.fixed[0, g:g + len(part)] = True
        row.argmax = row.current
        row.soft = None
        row.history = torch.full((max(row.cfg.stability_threshold, 1), 1, L), -1, dtype=torch.long, device=dev)
        row.step = row.cfg.max_denoising_steps
        row.locked = 0  # leading positions locked (emitted)
        row.same = torch.zeros(1, L, dtype=torch.long, device=dev)

    # --- encoder into a slot ---------------------------------------------------------------------------------
    def _encode(self, row: Row, ids: torch.Tensor):
        model, cfg = self.model, self.model.config
        n = ids.numel()
        start, end = row.length, row.length + n
        if end > self.keys[0].shape[2]:
            raise ValueError(f"sequence of {end} tokens exceeds the context length {self.context_length}")
        s = row.slot
        masks = model.encoder_masks(start, n)

        def kv_fn(layer, k, v):
            self.keys[layer][s:s + 1, :, start:end] = k
            self.values[layer][s:s + 1, :, start:end] = v
            lo, mask = masks[cfg.layer_types[layer]]
            return self.keys[layer][s:s + 1, :, lo:end], self.values[layer][s:s + 1, :, lo:end], mask

        positions = torch.arange(start, end, device=model.device)[None]
        model.run_layers(model.embed(ids[None]), positions, kv_fn, encoder=True)
        row.length = end

    # --- one decoder step over every running row -------------------------------------------------------------
    def _step(self):
        t0 = time.perf_counter()
        model, cfg = self.model, self.model.config
        rows = sorted((r for r in self.rows if not r.req.cancelled), key=lambda r: r.slot)
        for r in list(self.rows):
            if r.req.cancelled:
                self._retire(r, cancelled=True)
        if not rows:
            return
        L, dev = self.L, model.device
        R = len(rows)
        slots = torch.tensor([r.slot for r in rows], device=dev)
        lengths = torch.tensor([r.length for r in rows], device=dev)
        tmax = int(lengths.max())
        canvas = torch.cat([r.current for r in rows])
        positions = lengths[:, None] + torch.arange(L, device=dev)[None]
        embeds = model.embed(canvas)
        if all(r.soft is None for r in rows):
            x = model.self_conditioning(embeds, None)
        else:
            soft = torch.cat([r.soft if r.soft is not None else embeds.new_zeros(1, L, embeds.shape[-1])
                              for r in rows])
            x = model.self_conditioning(embeds, soft)  # a zero soft input gives exactly the zero signal
        # Canvas keys go to each row's scratch slots [length, length + L) of its own cache row (never committed;
        # the encoder overwrites them when the canvas is committed), so attention reads the cache in place.
        span = tmax + L
        j = torch.arange(span, device=dev)[None]
        own_canvas = (j >= lengths[:, None]) & (j < lengths[:, None] + L)
        masks = {}
        for kind in model.kinds:
            ok = j < lengths[:, None]
            if kind == SLIDING:
                ok = ok & (j >= cfg.window_floor(lengths[:, None]))
            masks[kind] = (ok | own_canvas)[:, None, None, :]
        s0 = int(slots[0])
        contiguous = int(slots[-1]) - s0 == R - 1  # rows are sorted by slot
        slot_idx = slots[:, None].expand(R, L)

        def kv_fn(layer, k, v):
            keys, values = self.keys[layer], self.values[layer]
            keys.permute(0, 2, 1, 3)[slot_idx, positions] = k.permute(0, 2, 1, 3)
            values.permute(0, 2, 1, 3)[slot_idx, positions] = v.permute(0, 2, 1, 3)
            if contiguous:
                return keys[s0:s0 + R, :, :span], values[s0:s0 + R, :, :span], masks[cfg.layer_types[layer]]
            return keys[slots, :, :span], values[slots, :, :span], masks[cfg.layer_types[layer]]

        logits = model.logits(model.run_layers(x, positions, kv_fn, encoder=False))
        emb_w, emb_scale = model.embed_tokens.weight, model.embed_scale()
        self.m["steps"] += 1
        self.m["row_steps"] += R
        self.m["decoder_passes"] += R
        for i, row in enumerate(rows):
            self._row_step(row, logits[i:i + 1], emb_w, emb_scale)
        self.step_hist.observe(time.perf_counter() - t0)

    def _row_step(self, row: Row, logits: torch.Tensor, emb_w, emb_scale):
        """The engine's step for one row (same draws, same `advance`), then the locking of leading positions."""
        rc, L, dev = row.cfg, self.L, row.current.device
        row.passes += 1
        logits.div_(temperature_at(rc, row.step))
        stats = step_stats(logits, row.gen, emb_w, emb_scale, None, rc.top_k, rc.top_p)
        noise = torch.randint(0, self.V, (1, L), device=dev, generator=row.gen)
        no = torch.zeros(1, dtype=torch.bool, device=dev)
        accept, new_current, new_argmax, soft, row.history, finished, _ = advance(
            rc, row.step, stats, row.current, row.argmax, row.soft, row.history, no, no.long(), no, noise, row.fixed)
        done = bool(finished)
        if self.lock_after > 0 and not done and row.step > 1:
            # lockable: kept this step (clamped positions always are), or argmax unchanged for lock_after steps
            row.same = torch.where(new_argmax == row.argmax, row.same + 1, 0)
            lockable = accept | (row.same >= self.lock_after)
            n = int(lockable[0].long().cumprod(0).sum())
            if row.req.suffix is not None:  # infill: only the gap is output
                n = min(n, row.cfg.max_new_tokens)
            if n > row.locked:
                if row.fixed is None:
                    row.fixed = torch.zeros(1, L, dtype=torch.bool, device=dev)
                lock_tok = torch.where(accept, new_current, new_argmax)[0, :n]
                row.fixed[0, :n] = True
                new_current[0, :n] = lock_tok  # clamped to the emitted tokens from now on
                new_argmax[0, :n] = lock_tok
                self._emit_tokens(row, lock_tok[row.locked:].tolist())
                row.locked = n
                done = n == L  # nothing left to denoise: commit now
        row.current, row.argmax, row.soft = new_current, new_argmax, soft
        if row.req.params.drafts:
            row.req.emit("draft", {"canvas": row.canvas_index, "step": row.step, "tokens": new_argmax[0].tolist(),
                                   "locked": row.locked})
        row.step -= 1
        if row.stopped:
            self._retire(row)
        elif done or row.step == 0:
            self._commit(row)

    def _emit_tokens(self, row: Row, tokens: list[int]):
        """Append final tokens to the row's output (stopping at a stop token or at max_tokens)."""
        if row.stopped:
            return
        stop = set(row.cfg.eos_token_id)
        pad = self.model.config.pad_token_id
        limit = row.cfg.max_new_tokens
        new = []
        for t in tokens:
            if len(row.out) + len(new) >= limit:
                row.stopped, row.finish_reason = True, "length"
                break
            if t == pad:  # pads in committed canvases only follow stop tokens; locked pads are dropped
                continue
            new.append(t)
            if t in stop:
                row.stopped, row.finish_reason = True, "stop"
                break
        if not row.stopped and len(row.out) + len(new) >= limit:
            row.stopped, row.finish_reason = True, "length"
        if new:
            if not row.out:  # the request's first tokens
                self.ttft_hist.observe(time.monotonic() - row.req.submitted)
            row.out += new
            self.m["generation_tokens"] += len(new)
            row.req.emit("tokens", new)

    def _commit(self, row: Row):
        finished = torch.zeros(1, dtype=torch.bool, device=row.current.device)
        tokens = apply_stop_tokens(row.argmax, finished, row.stop, self.model.config.pad_token_id)
        if row.req.suffix is not None:  # infill: the gap only
            gap = tokens[0, :row.cfg.max_new_tokens].tolist()
            self._emit_tokens(row, gap[row.locked:])
            if not row.stopped:
                row.finish_reason = "stop"
            self._retire(row)
            return
        self._emit_tokens(row, tokens[0, row.locked:].tolist())
        if row.stopped or bool(finished.all()) or row.canvas_index == row.n_canvases - 1:
            if row.finish_reason is None:
                row.finish_reason = "stop" if bool(finished.all()) else "length"
            self._retire(row)
            return
        try:
            self._encode(row, tokens[0])
        except ValueError:
            row.finish_reason = "length"
            self._retire(row)
            return
        self._new_canvas(row)

    def _retire(self, row: Row, cancelled: bool = False):
        if row in self.rows:
            self.rows.remove(row)
            self.free.append(row.slot)
        if cancelled:
            self.m["requests_cancelled"] += 1
            return
        self.m["requests_finished"] += 1
        elapsed = time.monotonic() - row.req.submitted
        self.request_hist.observe(elapsed)
        row.req.emit("done", {"finish_reason": row.finish_reason or "stop", "completion_tokens": len(row.out),
                              "prompt_tokens": len(row.req.prompt), "decoder_passes": row.passes,
                              "tokens_per_forward": len(row.out) / max(row.passes, 1), "latency_s": elapsed})


class Histogram:
    def __init__(self, buckets):
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, v: float):
        for i, b in enumerate(self.buckets):
            if v <= b:
                self.counts[i] += 1
                break
        else:
            self.counts[-1] += 1
        self.sum += v
        self.count += 1

    def render(self, name: str, help_: str) -> list[str]:
        out = [f"# HELP {name} {help_}", f"# TYPE {name} histogram"]
        acc = 0
        for b, c in zip(self.buckets, self.counts):
            acc += c
            out.append(f'{name}_bucket{{le="{b}"}} {acc}')
        out.append(f'{name}_bucket{{le="+Inf"}} {self.count}')
        out += [f"{name}_sum {self.sum}", f"{name}_count {self.count}"]
        return out
