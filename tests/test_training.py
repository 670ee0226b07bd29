import json
import random

import pytest
import torch
import torch.nn.functional as F

from dgemma import DiffusionGemma
from dgemma.training import data as D
from dgemma.training.cli import parse
from dgemma.training.objective import corrupt, diffusion_loss


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tests compare runs to float rounding; one thread fixes the reduction order. Restored afterwards,
    so the rest of the session keeps torch's thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model():
    return DiffusionGemma.from_pretrained("tiny")  # sliding window 16 < canvas 32: the window is exercised


def test_corruption_rate_matches_t():
    g = torch.Generator().manual_seed(0)
    canvas = torch.full((4, 20000), 7)
    t = torch.tensor([0.001, 0.25, 0.5, 0.9])
    out = corrupt(canvas, t, 256, g)
    changed = (out != canvas).float().mean(1)
    expected = t * (1 - 1 / 256)  # a uniform draw equals the original token 1/V of the time
    assert torch.allclose(changed, expected, atol=0.015)


def _draws(model, ids, P, g):
    _, parts = diffusion_loss(model, ids, P, "all", generator=g, return_parts=True)
    d = parts["draws"]
    d["sc"] = torch.zeros(ids.shape[0], dtype=torch.bool)
    return d


def test_vectorised_decoder_equals_denoise(model):
    L = model.config.canvas_length
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 256, (2, 5 + 3 * L), generator=g)
    d = _draws(model, ids, 5, g)
    with torch.no_grad():
        _, parts = diffusion_loss(model, ids, 5, "all", draws=d, return_parts=True)
        for b in range(3):
            cache = model.new_cache(2, 5 + 4 * L)
            model.encode(ids[:, :5 + b * L], cache)
            ref = model.denoise(d["noised"][:, b * L:(b + 1) * L], cache)
            torch.testing.assert_close(parts["logits"][:, b * L:(b + 1) * L], ref, atol=1e-4, rtol=1e-4)


def test_canvas_b_does_not_see_its_own_or_later_clean_tokens(model):
    L = model.config.canvas_length
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 256, (2, 5 + 3 * L), generator=g)
    d = _draws(model, ids, 5, g)
    with torch.no_grad():
        _, a = diffusion_loss(model, ids, 5, "all", draws=d, return_parts=True)
        ids2 = ids.clone()
        ids2[:, 5 + L:] = torch.randint(3, 256, ids2[:, 5 + L:].shape, generator=g)  # clean canvases 1, 2 change
        _, b = diffusion_loss(model, ids2, 5, "all", draws=d, return_parts=True)
    # canvas 0 and 1's logits (noised inputs fixed) are unchanged; canvas 2 sees clean canvas 1, so it changes
    torch.testing.assert_close(a["logits"][:, :2 * L], b["logits"][:, :2 * L])
    assert (a["logits"][:, 2 * L:] - b["logits"][:, 2 * L:]).abs().max() > 1e-3


def test_loss_equals_hand_computed(model):
    L = model.config.canvas_length
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(3, 256, (2, 4 + 2 * L), generator=g)
    d = _draws(model, ids, 4, g)
    with torch.no_grad():
        loss, parts = diffusion_loss(model, ids, 4, "all", encoder_loss_weight=0.5, draws=d, return_parts=True)
        cache = model.new_cache(2, ids.shape[1])
        enc_logits = model.logits(model.encode(ids, cache))
        enc = F.cross_entropy(enc_logits[:, :-1].reshape(-1, 256), ids[:, 1:].reshape(-1))
        total = 0.0
        for b in range(2):
            c = model.new_cache(2, ids.shape[1] + L)
            model.encode(ids[:, :4 + b * L], c)
            lg = model.denoise(d["noised"][:, b * L:(b + 1) * L], c)
            total = total + F.cross_entropy(lg.reshape(-1, 256), ids[:, 4 + b * L:4 + (b + 1) * L].reshape(-1),
                                            reduction="sum")
        dec = total / (2 * 2 * L)
    torch.testing.assert_close(loss, dec + 0.5 * enc, atol=1e-4, rtol=1e-4)


def test_decoder_only_loss_encodes_only_what_the_canvases_see():
    """With no encoder loss the encoder stops at the last supervised canvas's start: the decoder loss, its
    logits and its gradients are those of the full pass (left-padded rows and self-conditioning included).
    Float64, as the reductions run over fewer tokens."""
    model = DiffusionGemma.from_pretrained("tiny", dtype=torch.float64)
    L = model.config.canvas_length
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(3, 256, (3, 6 + 3 * L), generator=g)
    valid = torch.ones_like(ids, dtype=torch.bool)
    valid[0, :2] = False
    d = _draws(model, ids, 6, g)
    d["sc"] = torch.tensor([True, False, True])
    d["canvas_idx"] = torch.tensor([[0, 1], [1, 1], [0, 1]])  # the last canvas (2) is never supervised
    d["t"], d["noised"] = d["t"][:, :2], d["noised"][:, :2 * L]
    w = torch.randn(3, 2 * L, 256, generator=g, dtype=torch.float64)
    runs = []
    for weight in (0.0, 1.0):
        model.zero_grad(set_to_none=True)
        seen = []
        hook = model.embed_tokens.register_forward_hook(lambda m, a, out: seen.append(a[0].shape[1]))
        _, parts = diffusion_loss(model, ids, 6, "all", encoder_loss_weight=weight, draws=d, return_parts=True,
                                  valid=valid)
        hook.remove()
        (parts["logits"] * w).sum().backward()
        runs.append((parts, seen[0], torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])))
    (trim, trim_len, trim_grad), (full, full_len, full_grad) = runs
    assert (trim_len, full_len) == (6 + L, 6 + 3 * L)  # the encoder's input: up to canvas 1's start, and all
    assert torch.isnan(trim["encoder"]) and not torch.isnan(full["encoder"])
    torch.testing.assert_close(trim["logits"], full["logits"])
    torch.testing.assert_close(trim["decoder"], full["decoder"])
    # at init RMSNorm near its eps amplifies rounding (gradients reach 1e10): compare all gradients as one vector
    assert trim_grad.shape == full_grad.shape
    assert (trim_grad - full_grad).norm() <= 1e-6 * full_grad.norm()


def test_gradients_flow_and_sc_pass(model):
    L = model.config.canvas_length
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, 256, (4, 3 + L), generator=g)
    loss = diffusion_loss(model, ids, 3, "one", generator=g)
    loss.backward()
    assert model.embed_tokens.weight.grad is not None
    model.zero_grad(set_to_none=True)


def test_bad_jsonl_names_file_and_line(tmp_path):
    from dgemma.tokenizer import Tokenizer, default_tokenizer_path
    tok = Tokenizer.from_file(default_tokenizer_path())
    p = tmp_path / "d.jsonl"
    p.write_text('{"prompt": "a", "response": "b"}\n{oops\n')
    with pytest.raises(D.DataError, match=r"d.jsonl:2"):
        D.read_jsonl(p, tok)
    with pytest.raises(D.DataError, match="does not exist"):
        D.read_jsonl(tmp_path / "missing.jsonl", tok)


def test_sudoku_data_names_the_model_shape_it_needs():
    with pytest.raises(D.DataError, match="vocab_size >= 832"):
        D.SudokuData(2, 0, 81, 16)
    with pytest.raises(D.DataError, match="canvas_length 81"):
        D.SudokuData(2, 0, 32, 832)
    ids, P, valid = D.SudokuData(2, 0, 81, 832).batch(3, random.Random(0))
    assert ids.shape == (3, 82 + 81) and P == 82 and valid is None and int(ids.max()) < 832


def test_cli_rejects_bad_flags(tmp_path, capsys):
    with pytest.raises(SystemExit):
        parse(["--data", "x", "--supervise", "some"])
    assert "--supervise" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse(["--data", "x", "--steps", "0"])
    assert "--steps" in capsys.readouterr().err
    cfg = tmp_path / "c.toml"
    cfg.write_text('data = "sudoku"\nsteps = 7\n')
    args = parse(["--config", str(cfg), "--steps", "9"])
    assert args.data == "sudoku" and args.steps == 9
    cfg.write_text('nonsense = 1\n')
    with pytest.raises(SystemExit):
        parse(["--config", str(cfg), "--data", "x"])


def test_trainer_runs_and_checkpoint_loads_in_transformers(tmp_path):
    from dgemma.training.trainer import train
    out = tmp_path / "run"
    mc = json.dumps({"vocab_size": 832, "canvas_length": 81, "sliding_window": 256})
    args = parse(["--data", "sudoku:40", "--init", "tiny", "--model-config", mc, "--steps", "3", "--batch-size", "4",
                  "--out", str(out), "--eval-every", "3", "--eval-batches", "1", "--eval-examples", "8",
                  "--threads", "1", "--export", str(tmp_path / "export")])
    row = train(args)
    assert row["step"] == 3 and row["decoder"] > 0
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert any(r["kind"] == "eval" for r in rows)
    from transformers import DiffusionGemmaForBlockDiffusion
    _, info = DiffusionGemmaForBlockDiffusion.from_pretrained(out / "checkpoint", output_loading_info=True)
    assert [k for k in info["missing_keys"] if "vision" not in k] == [] and not info["unexpected_keys"]
    m = DiffusionGemma.from_pretrained(tmp_path / "export")
    assert m.config.vocab_size == 832


def test_lora_saves_loads_and_changes_logits_only_when_attached(tmp_path):
    from dgemma.training import lora
    m = DiffusionGemma.from_pretrained("tiny")
    ids = torch.randint(3, 256, (1, 10))
    canvas = torch.randint(0, 256, (1, 32))

    def logits():
        with torch.no_grad():
            c = m.new_cache(1, 42)
            m.encode(ids, c)
            return m.denoise(canvas, c)

    base = logits()
    params = lora.attach(m, rank=4, alpha=8)
    torch.testing.assert_close(logits(), base)  # B starts at zero
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn_like(p) * 0.05)
    tuned = logits()
    assert (tuned - base).abs().max() > 1e-3
    assert all(not p.requires_grad for n, p in m.named_parameters() if "lora_" not in n)
    lora.save(m, tmp_path / "ad")
    lora.detach(m)
    torch.testing.assert_close(logits(), base)
    lora.load(m, tmp_path / "ad")
    torch.testing.assert_close(logits(), tuned)
    lora.detach(m)
    torch.testing.assert_close(logits(), base)


def test_trainer_lora_and_ar_modes(tmp_path):
    from dgemma.training.trainer import train
    mc = json.dumps({"vocab_size": 832, "canvas_length": 81, "sliding_window": 256})
    common = ["--data", "sudoku:20", "--init", "tiny", "--model-config", mc, "--steps", "2", "--batch-size", "2",
              "--eval-every", "2", "--eval-batches", "1", "--eval-examples", "4", "--threads", "1"]
    row = train(parse(common + ["--out", str(tmp_path / "l"), "--lora-rank", "2"]))
    assert (tmp_path / "l" / "adapter" / "adapter.safetensors").is_file() and row["decoder"] > 0
    row = train(parse(common + ["--out", str(tmp_path / "a"), "--decoder-loss-weight", "0"]))
    assert row["encoder"] > 0


@pytest.mark.parametrize("extra", [[], ["--lora-rank", "2"]], ids=["full", "lora"])
def test_resume_equals_uninterrupted(tmp_path, extra):
    from dgemma.training.trainer import train
    mc = json.dumps({"vocab_size": 832, "canvas_length": 81, "sliding_window": 256})
    common = ["--data", "sudoku:20", "--init", "tiny", "--model-config", mc, "--steps", "4", "--batch-size", "2",
              "--eval-every", "100", "--eval-batches", "1", "--eval-examples", "4", "--threads", "1", "--warmup", "2",
              *extra]
    train(parse(common + ["--out", str(tmp_path / "full")]))
    train(parse(common + ["--out", str(tmp_path / "part"), "--stop-after", "2"]))
    train(parse(common + ["--out", str(tmp_path / "part"), "--resume"]))

    def losses(d):
        return [(r["step"], r["decoder"], r["encoder"]) for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())
                if r["kind"] == "train"]
    full, part = losses(tmp_path / "full"), losses(tmp_path / "part")
    assert [r[0] for r in part] == [1, 2, 3, 4]
    for a, b in zip(full, part):
        assert a[0] == b[0] and abs(a[1] - b[1]) < 1e-5 and abs(a[2] - b[2]) < 1e-5


def _metrics(d):
    return [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]


def _adam_moments(d):
    """The optimizer's (exp_avg, exp_avg_sq) per parameter, in parameter-group order (one process and DDP key
    them by index, FSDP by name; the order is the same)."""
    state = torch.load(d / "checkpoint" / "optimizer.pt", weights_only=True)
    keys = [k for group in state["param_groups"] for k in group["params"]]
    return [(state["state"][k]["exp_avg"], state["state"][k]["exp_avg_sq"]) for k in keys]


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_processes_equal_one_with_the_same_global_batch(tmp_path, mode):
    """torchrun, 2 CPU processes on gloo, 2 rows each == 1 process with 4 rows, after one optimizer step: the
    losses, the gradient norm, the gradient itself (Adam's moments after one step are 0.05 g and 0.01 g^2 of the
    clipped gradient), the weights, and the held-out losses with them.

    The two runs differ only in how the batch's float32 gradient sums are split (two rows, all-reduced, against
    four), which moves a value by a few float32 ulps of the largest terms summed: 1e-5 relative to the largest
    element is 100x that, while a rank that skipped the all-reduce, saw the wrong rows or saved a stale shard is
    off by the size of the gradient itself. Weights are compared only where the gradient is beyond that rounding:
    where it is not, Adam's first step (lr * g / |g|) turns a last-bit difference into a sign, and the weights
    differ by up to 2 lr by construction (after 3 steps, 29% of the weights beyond rounding on an AVX2 machine)."""
    import subprocess
    import sys
    from safetensors.torch import load_file
    from dgemma.training.trainer import train
    mc = json.dumps({"vocab_size": 832, "canvas_length": 81, "sliding_window": 256})
    common = ["--data", "sudoku:20", "--init", "tiny", "--model-config", mc, "--steps", "1", "--eval-every", "1",
              "--eval-batches", "1", "--eval-examples", "4", "--threads", "1", "--warmup", "2"]
    train(parse(common + ["--batch-size", "4", "--out", str(tmp_path / "one")]))
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "dgemma.training.cli", *common, "--batch-size", "2", "--dist", mode,
                          "--out", str(tmp_path / "two")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"{mode} over 2 processes" in run.stdout
    one, two = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    assert [r["kind"] for r in one] == [r["kind"] for r in two] == ["train", "eval"]
    for a, b in zip(one, two):
        for key in ("decoder", "encoder", "grad_norm"):
            if key in a:
                assert abs(a[key] - b[key]) <= 1e-5 * abs(a[key]), (key, a, b)
    w1 = load_file(str(tmp_path / "one" / "checkpoint" / "model.safetensors"))
    w2 = load_file(str(tmp_path / "two" / "checkpoint" / "model.safetensors"))
    assert w1.keys() == w2.keys()
    lr = one[0]["lr"]
    for k in w1:  # one Adam step moves a weight by at most lr (plus weight decay)
        torch.testing.assert_close(w2[k], w1[k], atol=2.0001 * lr, rtol=0)
    m1, m2 = _adam_moments(tmp_path / "one"), _adam_moments(tmp_path / "two")
    # the trainer's parameter groups: trained parameters (the router is frozen), matrices first
    p1, p2 = ([p for _, p in sorted(((name, p) for name, p in DiffusionGemma.from_pretrained(d / "checkpoint")
                                      .named_parameters() if ".router." not in name), key=lambda np: np[1].dim() < 2)]
              for d in (tmp_path / "one", tmp_path / "two"))
    assert len(m1) == len(m2) == len(p1) > 0
    for (avg1, sq1), (avg2, sq2), a, b in zip(m1, m2, p1, p2):
        assert avg1.shape == avg2.shape == a.shape
        torch.testing.assert_close(avg2, avg1, atol=1e-5 * float(avg1.abs().max()), rtol=0)
        torch.testing.assert_close(sq2, sq1, atol=1e-5 * float(sq1.abs().max()), rtol=0)
        sure = avg1.abs() > 1e-4 * float(avg1.abs().max())  # the gradient's sign is beyond rounding
        torch.testing.assert_close(b.detach()[sure], a.detach()[sure], atol=1e-6, rtol=1e-5)


def test_cli_missing_data_fails_before_training(tmp_path, capsys):
    from dgemma.cli import main
    rc = main(["train", "--data", str(tmp_path / "nope.txt"), "--tokenizer", "dgemma/assets/code/tokenizer.json",
               "--out", str(tmp_path / "o"), "--steps", "1"])
    assert rc == 2 and "nope.txt" in capsys.readouterr().err
    assert not (tmp_path / "o" / "metrics.jsonl").exists()


def _golden_run(steps=20):
    """A tiny model's 20-step curve on fixed synthetic data (no tokenizer or task code involved), in float64."""
    from dgemma.training.trainer import lr_at
    torch.manual_seed(0)
    m = DiffusionGemma.from_pretrained("tiny", seed=0, dtype=torch.float64)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3, betas=(0.95, 0.99), weight_decay=1e-4)
    g = torch.Generator().manual_seed(0)
    data = torch.randint(3, 40, (64, 8 + 2 * 32), generator=g)
    curve = []
    for step in range(steps):
        for grp in opt.param_groups:
            grp["lr"] = lr_at(step, steps, 5, 1e-3)
        ids = data[torch.randint(0, 64, (4,), generator=g)]
        loss, parts = diffusion_loss(m, ids, 8, "all", generator=g, return_parts=True)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        curve.append([float(parts["decoder"]), float(parts["encoder"])])
    return curve


# Where the golden curve must agree, and how closely. The model computes norms, softmaxes and logits in float32
# even in float64 (as the reference does), so CPUs whose float32 kernels round differently (AVX2, AVX-512) give
# losses a float32 ulp or two apart (4.8e-7 at 5.5; the stored curve came from an AVX-512 machine, an AVX2 one
# differs by at most 1.4e-6 over the first five steps). Scaling every initial weight by 1 + 1e-12 * noise (far
# beyond float64 reduction-order effects) moves those five steps by at most 4e-6; from the sixth on, a token's
# second expert flips and Adam compounds it, 4e-3 by step 20. So: 2e-5 on the first five steps, where any change
# to the loss (masks, noise, normalisation, self-conditioning) shows at step 1 and a 5% change of the learning
# rate or one more warmup step moves steps 2-5 by 3e-3 to 2e-2; 2e-2 on the later ones, and the curve must fall.
GOLDEN_EXACT_STEPS, GOLDEN_EXACT_ATOL, GOLDEN_LATER_ATOL = 5, 2e-5, 2e-2


def test_golden_curve():
    from pathlib import Path
    path = Path(__file__).parent / "data" / "golden_training_tiny.json"
    curve = _golden_run()
    golden = json.loads(path.read_text())["curve"]
    assert len(golden) == 20
    for step, ((d, e), (gd, ge)) in enumerate(zip(curve, golden)):
        atol = GOLDEN_EXACT_ATOL if step < GOLDEN_EXACT_STEPS else GOLDEN_LATER_ATOL
        assert abs(d - gd) <= atol and abs(e - ge) <= atol, (step, (d, e), (gd, ge))
    assert curve[-1][0] < curve[0][0] - 0.3


def test_left_padded_sft_rows_train_as_if_alone():
    """SFT batches left-pad prompts: the padding must be invisible (same decoder logits as the row alone) and
    carry no encoder loss (the batch's next-token loss sum is the rows' sums)."""
    m = DiffusionGemma.from_pretrained("tiny", dtype=torch.float64)
    L = m.config.canvas_length
    g = torch.Generator().manual_seed(0)
    pairs = [(torch.randint(3, 256, (n,), generator=g).tolist(), torch.randint(3, 256, (r,), generator=g).tolist())
             for n, r in ((5, 20), (11, 30))]
    data = D.SFTData(pairs, L, eos_id=1, pad_id=0)
    ids, P, valid = data._make(pairs)
    assert P == 11 and valid[0].tolist() == [False] * 6 + [True] * (ids.shape[1] - 6) and bool(valid[1].all())
    noised = torch.randint(0, 256, (2, L), generator=g)
    draws = {"canvas_idx": torch.zeros(2, 1, dtype=torch.long), "t": torch.full((2, 1), 0.5), "noised": noised,
             "sc": torch.tensor([True, False])}
    with torch.no_grad():
        _, both = diffusion_loss(m, ids, P, "all", draws=draws, valid=valid, enc_norm_tokens=1.0, norm_tokens=1.0,
                                 return_parts=True)
        enc_sum = 0.0
        for i, (p, r) in enumerate(pairs):
            alone_ids, alone_P, alone_valid = data._make([(p, r)])
            assert alone_valid is not None and bool(alone_valid.all())
            _, alone = diffusion_loss(m, alone_ids, alone_P, "all", draws={k: v[i:i + 1] for k, v in draws.items()},
                                      enc_norm_tokens=1.0, norm_tokens=1.0, return_parts=True)
            torch.testing.assert_close(both["logits"][i], alone["logits"][0], atol=1e-5, rtol=0)  # float32 logits
            enc_sum += float(alone["encoder"])
    assert abs(float(both["encoder"]) - enc_sum) < 1e-6 * enc_sum  # float32 cross-entropy sums


def test_a_signal_stops_after_the_step_with_a_checkpoint(tmp_path, monkeypatch):
    """SIGTERM in the middle of step 2 (sent from the step's own learning-rate lookup): step 2 finishes, its
    checkpoint is written, the run returns, the handlers are put back, and --resume goes on from step 3 with the
    same losses as a run never stopped."""
    import os
    import signal

    import dgemma.training.trainer as T
    mc = json.dumps({"vocab_size": 832, "canvas_length": 81, "sliding_window": 256})
    common = ["--data", "sudoku:20", "--init", "tiny", "--model-config", mc, "--steps", "4", "--batch-size", "2",
              "--eval-every", "100", "--eval-batches", "1", "--eval-examples", "4", "--threads", "1", "--warmup", "2"]
    T.train(parse(common + ["--out", str(tmp_path / "full")]))
    before = signal.getsignal(signal.SIGTERM)
    real = T.lr_at

    def lr_at(step, *a):
        if step == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(step, *a)
    monkeypatch.setattr(T, "lr_at", lr_at)
    T.train(parse(common + ["--out", str(tmp_path / "part")]))
    assert signal.getsignal(signal.SIGTERM) is before
    assert json.loads((tmp_path / "part" / "checkpoint" / "trainer_state.json").read_text())["step"] == 2
    monkeypatch.setattr(T, "lr_at", real)
    T.train(parse(common + ["--out", str(tmp_path / "part"), "--resume"]))
    full, part = ([(r["step"], r["decoder"]) for r in _metrics(tmp_path / d) if r["kind"] == "train"]
                  for d in ("full", "part"))
    assert [r[0] for r in part] == [1, 2, 3, 4]
    assert all(a[0] == b[0] and abs(a[1] - b[1]) < 1e-5 for a, b in zip(full, part))
