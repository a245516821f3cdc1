"""Benchmark plumbing that decides what a number means (not timings: those are never tested)."""
import pytest
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


def test_fuzzy_cases_run_the_logit_their_variant_names():
    from benchmarks.ops import fuzzy as fuzzy_bench
    from fact_fast.ops import fuzzy as fuzzy_ops
    from fact_fast.ops import reference
    fact = [case for case in fuzzy_bench.CASES if case.size == "fact"]
    assert sorted(case.variant for case in fact) == sorted(f"logit={logit}" for logit in fuzzy_ops.LOGITS)
    losses = {}
    for case in fact:
        inputs = case.make(device=torch.device("cpu"), dtype=torch.float32, scale=1.0)
        logit = fuzzy_bench.logit_of(case)
        got = case.run("reference", **inputs)[0]
        torch.testing.assert_close(got, reference.fuzzy_loss(**inputs, logit=logit)[0])
        losses[logit] = got.item()
    assert losses["scaled"] != losses["log"]  # the two variants time different computations


def test_run_rejects_an_unknown_variant():
    from benchmarks import run
    with pytest.raises(SystemExit, match="--variants: unknown"):
        run.main(["--ops", "fuzzy_loss", "--sizes", "fact", "--variants", "logit=lg"])


def test_harness_records_a_variant_only_when_the_case_has_one():
    def make(device, dtype, scale):
        return {"x": torch.randn(4, dtype=dtype, device=device)}

    for variant in ("", "logit=log"):
        case = Case(op="fuzzy_loss", size="tiny", make=make, run=lambda backend, x: x, variant=variant)
        result = run_case(case, [], torch.device("cpu"), torch.float32, scale=1.0, warmup=0, iters=1,
                          max_seconds=1.0, backward=False)
        assert result.get("variant") == (variant or None)
