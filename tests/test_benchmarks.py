"""Benchmark plumbing that decides what a number means (not timings: those are never tested)."""
import torch
import torch.nn.functional as F

from benchmarks.harness import Case, run_case
from benchmarks.ops import attention as attention_bench


def test_sdpa_baseline_pins_flash_with_4d_inputs_or_says_why_not():
    calls = []

    def fake_sdpa(q, k, v, *args, **kwargs):
        calls.append(q.dim())
        return q

    inputs = attention_bench._make("fact")(device=torch.device("cpu"), dtype=torch.float32, scale=1 / 64)
    real = F.scaled_dot_product_attention
    try:
        F.scaled_dot_product_attention = fake_sdpa
        attention_bench._sdpa(**inputs)()
    finally:
        F.scaled_dot_product_attention = real
    assert calls and set(calls) == {4}  # [B, H, L, d]: the shape flash kernels take

    def no_flash():
        raise RuntimeError("No available kernel. Aborting execution.")

    fallback = attention_bench.pinned_flash(no_flash, torch.device("cuda"))
    assert "flash unavailable on cuda" in fallback.note and "default" in fallback.note
    ok = attention_bench.pinned_flash(lambda: None, torch.device("cuda"))
    assert ok.note == "flash backend pinned"


def test_harness_records_a_baselines_note():
    def make(device, dtype, scale):
        return {"x": torch.randn(8, dtype=dtype, device=device)}

    def baseline(x):
        fn = lambda: x * 2  # noqa: E731
        fn.note = "what really ran"
        return fn

    case = Case(op="vq_nearest", size="tiny", make=make, run=lambda backend, x: x, baselines={"b": baseline})
    result = run_case(case, [], torch.device("cpu"), torch.float32, scale=1.0, warmup=0, iters=1, max_seconds=1.0,
                      backward=False)
    assert result["results"]["b"]["note"] == "what really ran"
