"""Continuous batching at denoising-step granularity: a scheduler over `Engine`'s step.

One background thread owns the model. Each request ("row") holds a slot (a batch row) of one `KVCache`, with
its own length, canvas, step counter and `torch.Generator`. Every loop iteration:

1. admit waiting requests into free slots and prefill them (`Engine.prefill` into their slot of the cache);
2. run ONE decoder pass (`model.denoise_static`, compiled with `compile=True`) over the canvases of the slots in
   use, each at its own position (per-row starts: the one attention pass sees each row's own keys). Eager on a
   CPU, the rows are apart (`ends`): each row's global attention and experts have the shapes they have alone, so a
   request's tokens do not depend on its batch-mates, bit for bit in float32 too (the dense matmuls' rounding
   does not depend on their row count: tested). Compiled, batch shapes are rounded up and rounding may differ;
3. per group of rows with the same settings: `Engine.sample` (the sampler's tiles, the renoising, `advance`) with
   the rows' own temperatures and generators, drawn in the order `Engine.stream` draws them for a batch of
   one, so a request's tokens equal `model.generate(seed=s)` on its own, up to float rounding (exactly, with
   lock_after=0, whenever rounding agrees). Compiled on CPU, when every row shares its settings and the
   vocabulary is small, the whole step is one graph (`Engine.step_graph`);
4. rows whose canvas is done commit it (stop tokens applied, `Engine.append` into their slot) and start the next
   canvas, or finish and free the slot at once; the row in the highest slot moves into it, so the running rows
   always fill slots [0, R).

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

from ..cache import KVCache
from ..constraints import Constraints
from ..engine import Engine, GenerationConfig, apply_stop_tokens, seeded_generator, temperature_at
from ..model import DiffusionGemma
from ..step_graph import StepSettings

log = logging.getLogger("dgemma.serving")

MIN_REUSE = 16  # a kept prefix shorter than this is not worth a cache row
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


@dataclass(eq=False)  # a request is itself, not its contents: two identical prompts are two requests
class Request:
    """What the HTTP side submits; events come back through `emit` (called from the engine thread)."""
    prompt: list[int]
    params: SamplingParams
    emit: callable  # emit(kind, payload): "tokens" (list[int]), "draft" (dict), "done" (dict), "error" (str)
    suffix: list[int] | None = None  # infill: clamped on the first canvas after a gap of max_tokens positions
    head: list[int] | None = None  # clamped at the start of the first canvas: the reply opens with them
    constraints: Constraints | None = None  # structured output (dgemma.json_schema): one request's, canvas by canvas
    images: tuple | None = None  # the prompt's images for its prefill (the engine's `images`); never kept for reuse
    cancelled: bool = False
    submitted: float = field(default_factory=time.monotonic)


class Row:
    """A running request: its slot, its cache length and its denoising state."""

    def __init__(self, req: Request, slot: int, model: DiffusionGemma):
        p = req.params
        self.req, self.slot = req, slot
        self.cfg = dataclasses.replace(p.gen, pad_token_id=model.config.pad_token_id)
        self.settings = StepSettings.of(self.cfg)  # what the step reads: rows with equal settings share it
        self.gen = seeded_generator(p.seed, model.device)
        self.stop = torch.tensor(self.cfg.eos_token_id, dtype=torch.long, device=model.device)
        L = model.config.canvas_length
        self.n_canvases = 1 if req.suffix is not None else math.ceil(self.cfg.max_new_tokens / L)
        self.encoded: list[int] = []  # what the slot's cache holds: the prompt and the committed canvases
        self.canvas_index = -1
        self.allowed = None  # this canvas's allowed-token sets (sets, index) when the request is constrained
        self.out: list[int] = []  # committed and locked tokens, stop token included, pads dropped
        self.passes = 0
        self.finish_reason = None
        self.stopped = False

    @property
    def length(self) -> int:
        """Tokens in the slot's cache."""
        return len(self.encoded)


class BatchEngine:
    def __init__(self, model: DiffusionGemma, max_batch: int = 8, max_queue: int = 64,
                 context_length: int | None = None, lock_after: int = 2, compile: bool = False,
                 prefix_cache: int = 4):
        """`compile`: the engine's compiled step (`Engine(compile=True)`); the decoder batch is then the slots
        [0, 2^k) holding every running row, so that at most log2(max_batch) + 1 shapes are compiled.
        `prefix_cache`: how many finished requests' caches are kept (extra cache rows after the batch's) so that a
        prompt extending one of them (a chat's next turn) encodes only its new tokens."""
        self.model = model.eval()
        cfg = model.config
        self.L, self.V = cfg.canvas_length, cfg.vocab_size
        self.max_batch, self.max_queue = max_batch, max_queue
        self.context_length = context_length or min(cfg.max_position_embeddings, 8192)
        self.lock_after, self.compile = lock_after, compile
        self.engine = Engine(model, compile=compile)
        # room for a full context's committed tokens and the canvas after them, within the model's maximum
        self.cache = model.new_cache(max_batch + prefix_cache,
                                     min(self.context_length + self.L, cfg.max_position_embeddings))
        # kept prefixes, least recently used first: (the tokens a cache row holds, that row)
        self.kept: list[tuple[list[int], int]] = []
        self.kept_rows = list(range(max_batch, max_batch + prefix_cache))
        self.spare = seeded_generator(0, model.device)  # draws for the idle slots of a one-graph step
        # an idle slot's canvas, a zero self-conditioning input and an unclamped canvas (only ever copied from)
        dev = model.device
        self.idle = (torch.zeros(1, self.L, dtype=torch.long, device=dev),
                     torch.zeros(1, self.L, cfg.hidden_size, dtype=model.dtype, device=dev),
                     torch.zeros(1, self.L, dtype=torch.bool, device=dev))
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
                  "steps": 0, "row_steps": 0, "prefix_hits": 0, "prefix_tokens_reused": 0}
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
        """Queue a request (before `start` too: those queued then are admitted together)."""
        if self.error is not None or (self.thread.ident is not None and not self.thread.is_alive()):
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
                self.free.sort(reverse=True)  # lowest slot first: the running rows stay in slots [0, R)
                self._start(req, self.free.pop())
            except Exception as e:  # noqa: BLE001 - one bad request must not kill the loop
                log.exception("request failed at prefill")
                self.m["requests_failed"] += 1
                req.emit("error", str(e))
        self.waiting = keep

    def _start(self, req: Request, slot: int):
        row = Row(req, slot, self.model)
        self.m["prompt_tokens"] += len(req.prompt)
        reused = [] if req.images is not None else self._reuse(req.prompt, slot)
        if reused:
            row.encoded = list(reused)
            self.m["prefix_hits"] += 1
            self.m["prefix_tokens_reused"] += len(reused)
        else:
            self.cache.valid[slot] = False  # the slot's earlier keys are gone
        try:
            self._encode(row, torch.tensor(req.prompt[row.length:], dtype=torch.long, device=self.model.device),
                         req.images)
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
        clamp = None  # (first position, tokens) clamped on the first canvas
        if row.canvas_index == 0 and row.req.suffix is not None:  # infill: the suffix after a gap of max_tokens
            g = row.cfg.max_new_tokens
            row.current = torch.zeros(1, L, dtype=torch.long, device=dev)
            clamp = g, row.req.suffix[:L - g]
        elif row.canvas_index == 0 and row.req.head:  # a forced tool call: `<|tool_call>call:NAME{` on the canvas
            clamp = 0, row.req.head
        if clamp is not None:
            at, part = clamp
            row.current[0, at:at + len(part)] = torch.tensor(part, dtype=torch.long, device=dev)
            row.fixed = torch.zeros(1, L, dtype=torch.bool, device=dev)
            row.fixed[0, at:at + len(part)] = True
        row.allowed = None  # (sets, index (1, L)) of a constrained canvas
        if row.req.constraints is not None:
            row.current, row.fixed, row.allowed = row.req.constraints.start(row.canvas_index, row.current, row.fixed)
        row.argmax = row.current
        row.soft = self.idle[1]  # the first step's exact zero signal
        row.history = torch.full((max(row.cfg.stability_threshold, 1), 1, L), -1, dtype=torch.long, device=dev)
        row.step = row.cfg.max_denoising_steps
        row.locked = 0  # leading positions locked (emitted)
        row.same = torch.zeros(1, L, dtype=torch.long, device=dev)

    def _reuse(self, prompt: list[int], slot: int) -> list[int]:
        """The longest kept prefix that `prompt` extends, copied into `slot` (or [] when none). Only a whole kept
        sequence is reused: sliding layers hold a ring of the last positions, so a cache cannot be cut back."""
        best = max((k for k in self.kept if len(prompt) > len(k[0]) >= MIN_REUSE and prompt[:len(k[0])] == k[0]),
                   key=lambda k: len(k[0]), default=None)
        if best is None:
            return []
        self._copy_row(best[1], slot)
        self.kept.remove(best)
        self.kept.append(best)  # most recently used
        return best[0]

    def _keep(self, row: Row) -> None:
        """Keep a finished row's cache (its prompt and committed canvases) for a prompt that extends it, in the
        least recently used kept row; kept prefixes of it are superseded."""
        if not (self.kept or self.kept_rows) or row.length < MIN_REUSE:
            return
        for k in [k for k in self.kept if row.encoded[:len(k[0])] == k[0]]:
            self.kept.remove(k)
            self.kept_rows.append(k[1])
        spare = self.kept_rows.pop() if self.kept_rows else self.kept.pop(0)[1]
        self._copy_row(row.slot, spare)
        self.kept.append((list(row.encoded), spare))

    def _copy_row(self, src: int, dst: int) -> None:
        c = self.cache
        for t in c.keys + c.values + [c.valid]:
            t[dst] = t[src]

    def _move(self, row: Row, slot: int) -> None:
        """Copy a row's cache slot (its keys, values and valid positions) to a free `slot`, and free its own."""
        self._copy_row(row.slot, slot)
        self.free.append(row.slot)
        row.slot = slot

    def _slot_cache(self, lo: int, hi: int, length: int = 0, upto: int | None = None) -> KVCache:
        """Slots [lo, hi) of the cache, in place (views), with `length` committed tokens; `upto`: only positions
        [0, upto) of the global layers (at least the ring's length), so a compiled pass attends to no more."""
        c, upto = self.cache, upto or self.cache.max_length
        keys, values = ([t[lo:hi] if c.config.is_sliding(i) else t[lo:hi, :, :upto] for i, t in enumerate(ts)]
                        for ts in (c.keys, c.values))
        return KVCache.over(c.config, keys, values, c.valid[lo:hi, :upto], length)

    def _encode(self, row: Row, ids: torch.Tensor, images: tuple | None = None):
        """Append a prompt or a committed canvas to the row's slot (one encoder pass, the engine's)."""
        end = row.length + ids.numel()
        if end + self.L > self.cache.max_length:
            raise ValueError(f"sequence of {end} tokens exceeds the context length {self.context_length}")
        cache = self._slot_cache(row.slot, row.slot + 1, row.length)
        if row.length == 0:
            self.engine.prefill(ids[None], cache, None, images)
        else:
            self.engine.append(ids[None], cache)
        row.encoded += ids.tolist()

    # --- one decoder step over every running row -------------------------------------------------------------
    def _step(self):
        t0 = time.perf_counter()
        for r in list(self.rows):
            if r.req.cancelled:
                self._retire(r, cancelled=True)
        rows = sorted(self.rows, key=lambda r: r.slot)
        if not rows:
            return
        model, L, dev = self.model, self.L, self.model.device
        # the decoder batch: slots [0, hi), the running rows (they are kept there); compiled, hi is rounded up to a
        # power of 2 and the idle slots compute what nobody reads
        hi = rows[-1].slot + 1
        if self.compile:
            hi = min(self.max_batch, 1 << (hi - 1).bit_length())
        at = {r.slot: r for r in rows}
        start = torch.tensor([at[s].length if s in at else 0 for s in range(hi)], device=dev)
        cache = self._slot_cache(0, hi, upto=self._keys_end(max(r.length for r in rows) + L))
        temps = {r.slot: temperature_at(r.cfg, r.step).to(dev) for r in rows}
        groups: dict = {}  # rows that can share `advance`: the same settings (and step, for a step-aware sampler)
        for r in rows:
            c = r.cfg
            groups.setdefault((r.settings.key, c.top_k, c.top_p, r.step if c.sampler.uses_step else 0),
                              []).append(r)
        # (constrained rows bring allowed-token tables of their own sizes: one graph for each mix would be built)
        if len(groups) == 1 and self.engine.one_graph(rows[0].cfg, hi, rows[0].gen) and \
                all(r.allowed is None for r in rows):
            results = self._advance([at.get(s) for s in range(hi)], temps, cache=cache, start=start)
        else:
            current = torch.cat([at[s].current if s in at else self.idle[0] for s in range(hi)])
            soft = torch.cat([at[s].soft if s in at else self.idle[1] for s in range(hi)])
            if self.engine.static_denoise is not None:
                hidden = self.engine.static_denoise(current, cache, start, soft)
            else:  # on a CPU rows apart: each row's global keys and experts as it would have them alone (a GPU's
                # kernels choose their algorithm by shape anyway, and there B small launches would cost)
                ends = tuple(self._keys_end(at[s].length + L if s in at else L) for s in range(hi)) \
                    if dev.type == "cpu" else None
                hidden = model.denoise_static(current, cache, start, soft, ends=ends)
            results = {}
            for group in groups.values():
                results.update(self._advance(group, temps, hidden))
        self.m["steps"] += 1
        self.m["row_steps"] += len(rows)
        self.m["decoder_passes"] += len(rows)
        for r, result in [(r, results[r.slot]) for r in rows]:  # a row may move to a lower slot meanwhile
            self._row_step(r, *result)
        self.step_hist.observe(time.perf_counter() - t0)

    def _keys_end(self, n: int) -> int:
        """The global-layer keys [0, end) a pass over n positions attends to: at least a ring's worth, and compiled
        a power of 2 (one graph per power of 2 of the context, rather than the whole cache every step)."""
        if self.compile:
            n = 1 << (n - 1).bit_length()
        return min(self.cache.max_length, max(self.cache.ring, n))

    def _batch_state(self, group: list[Row | None]):
        """The rows' denoising state as a batch for `Engine.sample` / `Engine.step_graph`: current, soft,
        argmax, history, finished, passes, done, fixed (rows finish on their own, so nothing is held). None: an
        idle slot (its results are never read)."""
        tokens, soft, unclamped = self.idle
        history = torch.full_like(next(r for r in group if r is not None).history, -1)
        no = torch.zeros(len(group), dtype=torch.bool, device=self.model.device)
        fixed = None
        if any(r is None or r.fixed is not None for r in group):
            fixed = torch.cat([unclamped if r is None or r.fixed is None else r.fixed for r in group])
        return (torch.cat([tokens if r is None else r.current for r in group]),
                torch.cat([soft if r is None else r.soft for r in group]),
                torch.cat([tokens if r is None else r.argmax for r in group]),
                torch.cat([history if r is None else r.history for r in group], dim=1), no, no.long(), no, fixed)

    @staticmethod
    def _by_row(group: list[Row | None], out) -> dict:
        """`advance`'s batched results, row by row: {slot: (accept, current, argmax, soft, history, finished,
        passes)}, each with a batch of one."""
        accept, current, argmax, soft, history, finished, passes = out
        return {r.slot: (accept[i:i + 1], current[i:i + 1], argmax[i:i + 1], soft[i:i + 1], history[:, i:i + 1],
                         finished[i:i + 1], passes[i:i + 1]) for i, r in enumerate(group) if r is not None}

    def _advance(self, group: list[Row | None], temps: dict, hidden: torch.Tensor | None = None, cache=None,
                 start=None) -> dict:
        """The rest of the step for rows with the same settings, from the decoder's hidden states (`Engine.sample`),
        or without them the whole step as the engine's one graph over slots [0, hi) of `cache` (`group`: one
        entry per slot, None for an idle one, which draws from a spare generator)."""
        first = next(r for r in group if r is not None)
        temperature = torch.stack([temps[(r or first).slot] for r in group])
        gens = [self.spare if r is None else r.gen for r in group]
        state = self._batch_state(group)
        allowed = self._allowed(group)
        if hidden is None:
            fixed = torch.zeros_like(state[0], dtype=torch.bool) if state[-1] is None else state[-1]
            out = self.engine.step_graph(first.settings, temperature, gens, cache, start, *state[:-1], fixed,
                                         allowed or (self.engine.every_token,
                                                     torch.zeros_like(fixed, dtype=torch.long)))
        else:
            slots = torch.tensor([r.slot for r in group], device=hidden.device)
            out = self.engine.sample(first.cfg, first.step, hidden.index_select(0, slots), temperature, gens, *state,
                                     allowed=allowed)
        return self._by_row(group, out)

    def _allowed(self, group: list[Row | None]) -> tuple | None:
        """The rows' allowed-token sets as one (sets, index) pair for the step: each constrained row's table after
        the all-tokens set, its indices shifted to it. None when no row is constrained."""
        if all(r is None or r.allowed is None for r in group):
            return None
        tables, index, n = [self.engine.every_token], [], 1
        for r in group:
            if r is None or r.allowed is None:
                index.append(torch.zeros(1, self.L, dtype=torch.long, device=self.model.device))
            else:
                tables.append(r.allowed[0])
                index.append(r.allowed[1] + n)
                n += r.allowed[0].shape[0]
        return torch.cat(tables), torch.cat(index)

    def _row_step(self, row: Row, accept, new_current, new_argmax, soft, history, finished, passes):
        """A row's results of the engine's step, then the locking of leading positions."""
        L, dev = self.L, row.current.device
        row.passes += 1
        row.history = history
        done = bool(finished)
        if self.lock_after > 0 and not done and row.step > 1 and row.req.constraints is None:
            # (a constrained canvas is repaired when committed: its tokens are emitted then, never retracted)
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
                                   "accepted": accept[0].tolist(), "locked": row.locked})
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
        c = row.req.constraints
        argmax = row.argmax
        if row.allowed is not None and c.repair is not None:
            argmax = c.repair(row.canvas_index, argmax)
        tokens = apply_stop_tokens(argmax, finished, row.stop, self.model.config.pad_token_id)
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
            if not cancelled and row.req.images is None:  # a prefix of image tokens says nothing of the pixels
                self._keep(row)  # before the slot is reused below
            self.rows.remove(row)
            last = max(self.rows, key=lambda r: r.slot, default=None)
            if last is not None and last.slot > row.slot:  # running rows stay in slots [0, R): no idle decoder rows
                self._move(last, row.slot)
            else:
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
