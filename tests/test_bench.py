"""`dgemma bench`: runs end to end on the tiny preset, roofline arithmetic, identity check, markdown output.

No speed assertions: only that every field is produced and the arithmetic is right (one test slows the encoder
passes by a sleep to check that the step times leave them out)."""

import json
import time

import pytest
import torch

from dgemma.bench import hardware, measure, report
from dgemma.cli import main
from dgemma.config import FULL, SLIDING, ModelConfig


def test_bench_command_runs_on_tiny_and_prints_every_field(tmp_path, capsys):
    pytest.importorskip("transformers")
    out_json = tmp_path / "r.json"
    md = tmp_path / "BENCH.md"
    code = main(["bench", "--model", "tiny", "--prompt-length", "12", "--new-tokens", "64", "--steps", "3",
                 "--reps", "1", "--ar-tokens", "4", "--calibrate-seconds", "0.05", "--scaling", "--batches", "1,2",
                 "--canvases", "8,16", "--prompts", "8,40", "--step-counts", "2", "--quiet", "--json", str(out_json),
                 "--results-dir", str(tmp_path / "results"), "--plots-dir", str(tmp_path / "plots"),
                 "--markdown", str(md)])
    assert code == 0
    table = capsys.readouterr().out
    for metric in ("prefill latency", "denoising step", "decoder forward", "sampling", "bookkeeping",
                   "steps per canvas", "tokens per forward", "time to first canvas", "end to end", "peak memory",
                   "reference generate", "token identity in float64", "AR decoding", "memory bandwidth",
                   "matmul rate"):
        assert metric in table, metric
    r = json.loads(out_json.read_text())
    d = r["dgemma"]
    assert d["steps_per_canvas"] == [3, 3] and d["committed_positions"] == 64
    assert d["step_s"] > 0 and d["forward_s"] > 0 and d["sampling_s"] > 0 and d["ttft_s"] > 0
    assert d["floor"]["seconds"] > 0 and d["step_over_floor"] > 0
    assert r["reference"]["identity_float64"]["identical"]  # float64: rounding cannot decide a sample
    pairs = r["paired"]["speedups"]  # the reference comparison's spread, pair by pair
    assert len(pairs) == r["paired"]["runs"] == 3 and pairs == sorted(pairs)
    assert pairs[0] * (1 - 1e-9) <= r["reference"]["speedup"] <= pairs[-1] * (1 + 1e-9)  # (rounding)
    assert "over the 3 pairs" in table
    assert r["ar"]["tokens"] == 4 and r["ar"]["diffusion_speedup"] > 0
    assert [row["batch"] for row in r["scaling"]["batch"]] == [1, 2]
    assert [row["prompt"] for row in r["scaling"]["prompt"]] == [8, 40]
    assert len(r["scaling"]["steps"]) == 1
    text = md.read_text()
    assert "## tiny-cpu-fp32" in text and "command: `dgemma bench --model tiny" in text
    assert "not yet run: no gpu available in this session" in text.lower()
    assert list((tmp_path / "plots").glob("*.png"))


def test_compiled_step_breakdown_when_the_step_is_one_graph():
    """With the whole CPU step in one compiled graph, the graph is timed as such, the forward and the sampling
    apart, and the table says so; the tokens of that path are the eager ones."""
    cfg = ModelConfig(vocab_size=64, hidden_size=16, intermediate_size=16, num_layers=2, num_heads=2, num_kv_heads=1,
                      head_dim=8, global_head_dim=8, num_global_kv_heads=1, sliding_window=4,
                      layer_types=[SLIDING, FULL], num_experts=2, top_k_experts=1, moe_intermediate_size=8,
                      canvas_length=4)
    from dgemma import DiffusionGemma
    model = DiffusionGemma(cfg).eval()
    model.init_weights(torch.Generator().manual_seed(0))
    prompt = torch.randint(3, 64, (1, 5), generator=torch.Generator().manual_seed(1))
    # The bookkeeping of a compiled run is tested, not the compiler (tests/test_engine.py): the compiled callables
    # run eagerly under this stance, so nothing is compiled.
    with torch.compiler.set_stance("force_eager"):
        d = measure.measure_dgemma(model, prompt, new_tokens=8, steps=3, seed=0, reps=1, compile=True)
    # the prompt's prefill and a finished canvas's append fall between step events: made 0.5 s slower here, they
    # must not land in the step times (a few ms each) but in the time to the first canvas
    from dgemma.engine import Engine
    slow = lambda fn: lambda *a, **k: (time.sleep(0.5), fn(*a, **k))[1]  # noqa: E731
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Engine, "prefill", slow(Engine.prefill))
        mp.setattr(Engine, "append", slow(Engine.append))
        eager = measure.measure_dgemma(model, prompt, new_tokens=8, steps=3, seed=0, reps=1)
    assert eager["ttft_s"] > 0.5 and eager["step_s"] < 0.1 and eager["step_mean_s"] < 0.1  # (a leak: > 0.16)
    assert torch.equal(d["sequences"], eager["sequences"]) and "graph_s" not in eager
    assert d["split_timed_apart"] and d["graph_s"] > 0 and d["forward_s"] > 0 and d["sampling_s"] > 0
    d.update(floor={"seconds": 1e-6, "bound": "compute"}, step_over_floor=1.0, forward_over_floor=1.0)
    rates = {"bandwidth_bytes_per_s": 1.0, "matmul": {"flops_per_s": 1.0, "dtype": "float32", "best_shape": [1]}}
    rows = [r[0].strip() for r in report.summary_rows({"prefill_s": 0.0, "dgemma": d, "machine_rates": rates})]
    assert rows[2:6] == ["one compiled graph", "decoder forward", "sampling", "outside the graph"]


def test_roofline_arithmetic_on_a_hand_made_model():
    # one global layer, no sliding window effects; numbers worked out by hand below
    cfg = ModelConfig(vocab_size=100, hidden_size=10, intermediate_size=20, num_layers=1, num_heads=2,
                      num_kv_heads=1, head_dim=4, global_head_dim=4, num_global_kv_heads=1, sliding_window=8,
                      layer_types=[FULL], num_experts=4, top_k_experts=4, moe_intermediate_size=5, canvas_length=3)
    attn = 10 * 2 * 4 * 2 + 10 * 1 * 4 * 1 + 2 * 4  # q and o; k only (global: V = K); q/k norm scales
    dense, norms, router, expert = 3 * 10 * 20, 7 * 10, 10 * 4 + 10 + 4, 3 * 10 * 5
    shared = attn + dense + norms + router
    assert cfg.layer_parameters(0) == (shared, expert)
    # top-4 of 4 experts: every expert is hit
    assert hardware.experts_hit(4, 4, 1) == pytest.approx(4)
    assert hardware.experts_hit(128, 8, 256) == pytest.approx(128 * (1 - (120 / 128) ** 256))
    w, kv, flops = hardware.forward_cost(cfg, batch=2, new_tokens=3, context=7, bytes_per_param=2)
    sc = 10 + 3 * 10 * 20
    assert w == 2 * (100 * 10 + 10 + sc + shared + 4 * expert)
    assert kv == 2 * (2 * 1 * 7 * 4 * 1)  # bytes: batch 2, 1 kv head, 7 cached, dim 4, K only (global)
    T = 6
    assert flops == pytest.approx(2 * T * 100 * 10 * 2 + 2 * T * 3 * 10 * 20 + 2 * T * (shared + 4 * expert)
                                  + 2 * 2 * T * 2 * 4 * (7 + 3))
    f = hardware.step_floor(cfg, 2, 3, 7, 2, bandwidth=1e3, flops_per_s=1e6)
    assert f.memory_s == pytest.approx((w + kv) / 1e3) and f.compute_s == pytest.approx(flops / 1e6)
    assert f.seconds == max(f.memory_s, f.compute_s) and f.bound == "memory"


def test_sliding_layers_read_at_most_a_window_of_cache():
    cfg = ModelConfig(vocab_size=16, hidden_size=8, intermediate_size=8, num_layers=2, num_heads=2, num_kv_heads=2,
                      head_dim=4, global_head_dim=8, num_global_kv_heads=1, sliding_window=5,
                      layer_types=[SLIDING, FULL], num_experts=2, top_k_experts=1, moe_intermediate_size=8)
    _, kv, _ = hardware.forward_cost(cfg, batch=1, new_tokens=4, context=100, bytes_per_param=1)
    assert kv == 2 * 4 * 4 * 2 + 100 * 8 * 1 * 1  # sliding: window-1 = 4 slots, K and V; global: all 100, K only


def test_identity_check_reports_a_mismatch():
    a = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    same = measure.compare_sequences(a, a.clone())
    assert same["identical"] and same["agreement"] == 1.0 and same["first_mismatch"] is None
    b = a.clone()
    b[1, 2] = 0
    diff = measure.compare_sequences(a, b)
    assert not diff["identical"] and diff["first_mismatch"] == [1, 2] and diff["agreement"] == pytest.approx(7 / 8)
    assert not measure.compare_sequences(a, a[:, :3])["identical"]


def test_markdown_marks_the_cuda_section_not_run_and_includes_it_once_run(tmp_path):
    res = tmp_path / "results"
    res.mkdir()
    md = report.write_markdown(res, tmp_path / "B.md", tmp_path / "plots")
    assert "Not yet run: no GPU available in this session" in md.read_text()
    (res / "cuda-26b.json").write_text(json.dumps({
        "kind": "cuda-26b", "name": "cuda-26b", "command": "python bench/cuda_26b.py", "machine": "GPU X",
        "date": "today", "note": "n", "rows": [{"batch": 1, "prompt": 4096, "step_s": 0.02, "forward_s": 0.018,
                                                 "floor_s": 0.015, "reference_step_s": 0.04, "ar_token_s": 0.005,
                                                 "ar_floor_s": 0.004, "diffusion_tokens_per_s": 800,
                                                 "ar_tokens_per_s": 200}]}))
    text = report.write_markdown(res, tmp_path / "B.md", tmp_path / "plots").read_text()
    assert "Not yet run" not in text and "| 1 | 4096 | 20.0 ms" in text and "2.00x" in text


def test_fast_sampling_draws_exactly_what_multinomial_draws():
    """From the same generator, the precomputed-uniform sample equals multinomial's, and both leave the random
    stream at the same point (an identity head makes the hidden states the logits)."""
    from dgemma.sampling import draw_uniforms, tile_stats
    logits = torch.randn(300, 513) * 2
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    head = (torch.ones(300, 1), None, torch.eye(513), torch.tensor(1.0), 1e6)
    for _ in range(3):
        t, _, w, scale, cap = head
        fast = tile_stats(logits, t, draw_uniforms(logits.shape, g1), None, w, scale, cap)
        slow = tile_stats(logits, t, None, g2, w, scale, cap)
        assert all(torch.equal(a, b) for a, b in zip(fast[:4], slow[:4]))
    assert torch.equal(torch.randint(0, 9, (20,), generator=g1), torch.randint(0, 9, (20,), generator=g2))


def test_chunked_prefill_equals_one_pass_in_float64():
    from dgemma import DiffusionGemma
    model = DiffusionGemma.from_pretrained("tiny", dtype=torch.float64)
    prompt = torch.randint(3, 256, (2, 150), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, 150, dtype=torch.long)
    mask[1, :37] = 0
    out = []
    for chunk in (0, 32):
        model.prefill_chunk = chunk
        cache = model.new_cache(2, 150 + 32)
        with torch.no_grad():
            hidden = model.encode(prompt, cache, mask)
            canvas = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(1))
            out.append((hidden, model.denoise(canvas, cache), cache.length))
    assert out[0][2] == out[1][2] == 150
    torch.testing.assert_close(out[0][0][mask.bool()], out[1][0][mask.bool()], atol=1e-10, rtol=0)
    torch.testing.assert_close(out[0][1], out[1][1], atol=1e-10, rtol=0)


def test_saved_tables_render_with_their_command_machine_and_date(tmp_path):
    """Task evaluations and server load tests save tables that BENCHMARKS.md renders (never edited by hand)."""
    res = tmp_path / "results"
    path = report.save_table("t1", "Some evaluation", "python -m x --save t1", ["a", "b"], [[1, "2.0%"], [3, "4.0%"]],
                            text="Why it was measured.", results_dir=res)
    saved = json.loads(path.read_text())
    assert saved["kind"] == "table" and saved["machine"] and saved["date"].endswith("UTC")
    text = report.write_markdown(res, tmp_path / "B.md", tmp_path / "plots").read_text()
    section = text[text.index("## Some evaluation"):]
    assert "- command: `python -m x --save t1`" in section and "Why it was measured." in section
    assert "| a | b |" in section and "| 1 | 2.0% |" in section and "| 3 | 4.0% |" in section


def test_cuda_script_runs_its_code_path_on_cpu_at_a_tiny_shape(capsys):
    """bench/cuda_26b.py has no GPU in CI: its measurement path runs here on the tiny preset instead."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parent.parent / "bench" / "cuda_26b.py"
    spec = importlib.util.spec_from_file_location("cuda_26b", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    with torch.compiler.set_stance("force_eager"):  # its compiled path, run eagerly: compiling is tested elsewhere
        rc = script.main(["--model", "tiny", "--device", "cpu", "--dtype", "fp32", "--prompt", "48", "--batches",
                          "1", "--steps", "3", "--ar-tokens", "16", "--reps", "1", "--no-reference", "--no-save"])
    result = json.loads(capsys.readouterr().out)
    assert rc == 0 and result["errors"] == [] and "decoder compiled" in result["note"]
    assert [r["batch"] for r in result["rows"]] == [1]
    for row in result["rows"]:
        assert row["step_s"] > 0 and row["floor_s"] > 0 and row["ar_token_s"] > 0 and row["prefill_s"] > 0


def test_recorded_command_reproduces_the_named_run():
    """The command saved with a result names it: rerun without --name, a compiled run would overwrite the
    default-named eager row."""
    from dgemma.bench.command import command_line
    from dgemma.cli import build_parser
    args = build_parser().parse_args(["bench", "--model", "tiny", "--threads", "1", "--compile", "--name", "t-c"])
    assert vars(build_parser().parse_args(command_line(args).split()[1:])) == vars(args)  # every option round-trips
    assert "--name t-c" in command_line(args)
