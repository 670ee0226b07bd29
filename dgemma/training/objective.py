"""The training objective of DESIGN.md section 3, vectorised over canvases.

Layout of one batch: `ids` (B, T) clean tokens, T = P + C*L: a prompt of P tokens, then C canvases of
L = canvas_length tokens (the last EOS-filled by the data code). One causal encoder pass over the clean
sequence records every layer's keys/values; ONE decoder pass runs every supervised noised canvas, each
attending to [clean keys it may see ; its own noised keys] through a block mask:
canvas c (start slot s = P + c*L) sees clean slots j < s (and j >= s - (window-1) on sliding layers) and
its own canvas bidirectionally, exactly what `model.denoise` sees on a cache holding ids[:, :s].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import SLIDING
from ..model import keys_visible


def corrupt(canvas: torch.Tensor, t: torch.Tensor, vocab_size: int, generator=None) -> torch.Tensor:
    """Replace each token by a uniform random vocab token with probability t (t broadcast over the last dim)."""
    u = torch.rand(canvas.shape, generator=generator, device=canvas.device)
    noise = torch.randint(0, vocab_size, canvas.shape, generator=generator, device=canvas.device)
    return torch.where(u < t[..., None], noise, canvas)


def split_canvases(prompt_len: int, total_len: int, canvas_length: int) -> int:
    n = total_len - prompt_len
    if n <= 0 or n % canvas_length:
        raise ValueError(f"response part of {n} tokens is not a positive multiple of canvas_length {canvas_length}")
    return n // canvas_length


def head(model, hidden: torch.Tensor) -> torch.Tensor:
    """model.logits without its in-place ops (autograd needs tanh's output): tied head, float32 softcap."""
    cap = model.config.final_logit_softcapping
    return torch.tanh(F.linear(hidden, model.embed_tokens.weight).float() / cap) * cap


def decoder_masks(model, P: int, L: int, canvas_idx: torch.Tensor, T: int, valid: torch.Tensor | None = None) -> dict:
    """canvas_idx (B, K): which canvas each decoder block is; `valid` (B, T): real clean tokens (None: all).
    Mask (B, 1, K*L, T + K*L)."""
    B, K = canvas_idx.shape
    device = canvas_idx.device
    start = P + canvas_idx * L  # (B, K)
    qstart = start.repeat_interleave(L, dim=1)[:, :, None]  # (B, K*L, 1) each query's canvas start
    slots = torch.arange(T, device=device)[None, None, :]
    qblock = torch.arange(K * L, device=device) // L
    own = (qblock[:, None] == qblock[None, :])[None].expand(B, -1, -1)
    real = torch.ones((), dtype=torch.bool, device=device) if valid is None else valid[:, None, :]
    out = {}
    for kind in model.kinds:  # the clean keys as `model.attention_masks` has a canvas see them; then its own
        window = model.config.sliding_window if kind == SLIDING else None
        clean = keys_visible(qstart, slots, real, torch.zeros((), dtype=torch.bool, device=device), window)
        out[kind] = torch.cat([clean, own], dim=2)[:, None]
    return out


def encoder_forward(model, ids: torch.Tensor, checkpoint: bool = False, valid: torch.Tensor | None = None):
    """Causal pass over the clean sequence; returns (hidden, {layer: (k, v)})."""
    B, T = ids.shape
    pos = torch.arange(T, device=ids.device)
    real = torch.ones(1, 1, T, dtype=torch.bool, device=ids.device) if valid is None else valid[:, None, :]
    masks = {kind: keys_visible(pos[:, None], pos, real, pos[:, None] == pos,
                                model.config.sliding_window if kind == SLIDING else None)[:, None]
             for kind in model.kinds}  # causal: each token sees the real ones before it (a padding one, itself)
    store: dict = {}

    def kv_fn(layer, k, v):  # idempotent under checkpoint recompute: the same slot is overwritten
        store[layer] = (k, v)
        return k, v, masks[model.config.layer_types[layer]]

    positions = torch.arange(T, device=ids.device)[None].expand(B, -1)
    hidden = model.run_layers(model.embed(ids), positions, kv_fn, encoder=True, checkpoint=checkpoint)
    return hidden, store


def decoder_forward(model, noised: torch.Tensor, canvas_idx: torch.Tensor, P: int, store: dict, T: int,
                    soft: torch.Tensor | None = None, checkpoint: bool = False, detach: bool = False,
                    valid: torch.Tensor | None = None):
    """noised (B, K*L) canvases at canvas_idx (B, K); returns (B, K*L, V) float32 logits."""
    L = model.config.canvas_length
    masks = decoder_masks(model, P, L, canvas_idx, T, valid)
    positions = canvas_slots(P, L, canvas_idx)  # a canvas token's position is its slot in the sequence

    def kv_fn(layer, k, v):
        ck, cv = store[layer]
        if detach:
            ck, cv = ck.detach(), cv.detach()
        return torch.cat([ck, k], dim=2), torch.cat([cv, v], dim=2), masks[model.config.layer_types[layer]]

    x = model.self_conditioning(model.embed(noised), soft)
    return head(model, model.run_layers(x, positions, kv_fn, encoder=False, checkpoint=checkpoint))


def sample_draws(model, ids: torch.Tensor, prompt_len: int, supervise: str = "one", sc_prob: float = 0.5,
                 generator=None, given: dict | None = None, clean_span: float = 0.0) -> dict:
    """The random choices of one batch, those not `given`, in a fixed order: canvas_idx (B,K), t (B,K),
    noised (B,K*L), sc (B,). Drawn for the whole global batch so that data-parallel ranks, each taking its
    rows, see exactly what one process would.

    With probability `clean_span` a canvas keeps one random span of its tokens clean: what an infill's clamped
    suffix looks like to the decoder (noised gap, clean text, noised rest). 0 draws nothing extra."""
    B, T = ids.shape
    L, V, P = model.config.canvas_length, model.config.vocab_size, prompt_len
    C = split_canvases(P, T, L)
    dev = ids.device
    draws = dict(given or {})
    if "canvas_idx" not in draws:
        if supervise == "all":
            draws["canvas_idx"] = torch.arange(C, device=dev)[None].expand(B, -1)
        elif supervise == "one":
            draws["canvas_idx"] = torch.randint(0, C, (B, 1), generator=generator, device=dev)
        else:
            raise ValueError(f"supervise must be 'one' or 'all', got {supervise!r}")
    K = draws["canvas_idx"].shape[1]
    if "t" not in draws:
        draws["t"] = torch.rand((B, K), generator=generator, device=dev) * (1 - 1e-3) + 1e-3
    if "noised" not in draws:
        target = ids.gather(1, canvas_slots(P, L, draws["canvas_idx"]))
        target = target.view(B, K, L)
        noised = corrupt(target, draws["t"], V, generator)
        if clean_span > 0:
            pick = torch.rand((B, K, 1), generator=generator, device=dev) < clean_span
            a = torch.randint(0, L, (B, K, 1), generator=generator, device=dev)
            b = a + torch.randint(1, L + 1, (B, K, 1), generator=generator, device=dev)
            pos = torch.arange(L, device=dev)
            noised = torch.where(pick & (pos >= a) & (pos < b), target, noised)
        draws["noised"] = noised.view(B, K * L)
    if "sc" not in draws:
        draws["sc"] = torch.rand((B,), generator=generator, device=dev) < sc_prob
    return draws


def canvas_slots(P: int, L: int, canvas_idx: torch.Tensor) -> torch.Tensor:
    """(B, K) canvas indices -> (B, K*L) sequence slots of their tokens."""
    K = canvas_idx.shape[1]
    return (P + canvas_idx * L).repeat_interleave(L, dim=1) + torch.arange(K * L, device=canvas_idx.device) % L


def encoder_targets(ids: torch.Tensor, valid: torch.Tensor | None) -> int:
    """How many next-token targets the encoder loss has (pairs of real tokens)."""
    if valid is None:
        return ids.shape[0] * (ids.shape[1] - 1)
    return int((valid[:, :-1] & valid[:, 1:]).sum())


def not_computed(ref: torch.Tensor) -> torch.Tensor:
    """The reported value of a loss that was not computed (nan), on `ref`'s device."""
    return torch.full((), float("nan"), device=ref.device)


def diffusion_loss(model, ids: torch.Tensor, prompt_len: int, supervise: str = "one",
                   encoder_loss_weight: float = 1.0, sc_prob: float = 0.5, generator=None,
                   checkpoint: bool = False, norm_tokens: float | None = None, enc_norm_tokens: float | None = None,
                   return_parts: bool = False, draws: dict | None = None,
                   decoder_loss_weight: float = 1.0, same_passes: bool = False, valid: torch.Tensor | None = None):
    """Loss of one (micro)batch. `norm_tokens` is the global number of supervised canvas tokens (defaults to this
    batch's); `enc_norm_tokens` likewise for the encoder's next-token targets. Random draws come from
    `generator` (or are given in `draws`: t (B,K), noised (B,K*L), sc (B,), canvas_idx (B,K)).
    `valid` (B, T) marks real tokens of left-padded prompts: padding is never attended to nor predicted, and
    `enc_norm_tokens` then counts the real next-token targets.
    `same_passes`: run the self-conditioning pass over every row, whatever the draws (rows drawn "off" still get the
    exact zero signal), so that every FSDP2 rank runs the same modules and so the same collectives."""
    B, T = ids.shape
    L = model.config.canvas_length
    V = model.config.vocab_size
    P = prompt_len
    draws = sample_draws(model, ids, P, supervise, sc_prob, generator, draws)
    canvas_idx = draws["canvas_idx"]
    target = ids.gather(1, canvas_slots(P, L, canvas_idx))  # (B, K*L)
    noised, sc = draws["noised"], draws["sc"]

    if encoder_loss_weight == 0:
        # Nothing needs the encoder's logits, nor its keys past the start of the last supervised canvas (a canvas
        # sees the clean tokens strictly before it): encode only that prefix. Exact, and with one canvas per
        # example it halves the encoder's work.
        T = P + int(canvas_idx.max()) * L
        valid = None if valid is None else valid[:, :T]
        hidden, store = encoder_forward(model, ids[:, :T], checkpoint=checkpoint, valid=valid)
        enc = not_computed(ids)
    else:
        hidden, store = encoder_forward(model, ids, checkpoint=checkpoint, valid=valid)
        enc_logits = head(model, hidden[:, :-1])
        enc_targets = ids[:, 1:] if valid is None else ids[:, 1:].masked_fill(~(valid[:, :-1] & valid[:, 1:]), -100)
        enc_sum = F.cross_entropy(enc_logits.reshape(-1, V), enc_targets.reshape(-1), reduction="sum",
                                  ignore_index=-100)
        n_enc = float(enc_norm_tokens if enc_norm_tokens is not None else encoder_targets(ids, valid))
        enc = enc_sum / n_enc
    if decoder_loss_weight == 0:  # autoregressive baseline: the encoder's next-token loss only
        loss = encoder_loss_weight * enc
        if return_parts:
            return loss, {"decoder": not_computed(ids), "encoder": enc.detach(), "draws": draws}
        return loss
    soft = None
    if same_passes or bool(sc.any()):
        with torch.no_grad():
            rows = torch.arange(B, device=ids.device) if same_passes else sc.nonzero().squeeze(1)
            sub = {i: (k[rows], v[rows]) for i, (k, v) in store.items()}
            first = decoder_forward(model, noised[rows], canvas_idx[rows], P, sub, T, None, detach=True,
                                    valid=None if valid is None else valid[rows])
            full = first.new_zeros((B,) + first.shape[1:])
            full[rows] = first
        soft = model.soft_embeddings(full, sc)
    logits = decoder_forward(model, noised, canvas_idx, P, store, T, soft, checkpoint=checkpoint, valid=valid)
    dec_sum = F.cross_entropy(logits.reshape(-1, V), target.reshape(-1), reduction="sum")
    n_dec = float(norm_tokens if norm_tokens is not None else target.numel())
    dec = dec_sum / n_dec
    loss = decoder_loss_weight * dec + (encoder_loss_weight * enc if encoder_loss_weight else 0.0)
    if return_parts:
        return loss, {"decoder": dec.detach(), "encoder": enc.detach(), "draws": draws, "logits": logits}
    return loss
