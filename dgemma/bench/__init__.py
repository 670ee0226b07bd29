"""`dgemma bench`: side-by-side speed measurements a skeptic can reproduce with one command.

In one run, on the same weights and settings, it measures dgemma's block-diffusion decoding (prefill latency,
per-step latency split into decoder forward / sampling / bookkeeping, steps per canvas, tokens per forward,
end-to-end tokens/s, time to first committed canvas, peak memory), the reference implementation's `generate`
(transformers 5.23, when installed) with a token-identity check, autoregressive decoding of the same weights
(`generate_ar`), and the roofline floor of a denoising step: weight (and KV) bytes touched over the memory
bandwidth and FLOPs over the matmul rate, both measured on the spot. Optional scaling runs sweep batch size,
prompt length, canvas length and number of steps. Results are written as JSON; `BENCHMARKS.md` and its plots
are regenerated from every JSON result file (`write_markdown`), never edited by hand.

transformers is imported only inside the reference comparison, and only when it is installed.
"""
