"""Scale and faults: DDP under torchrun equals one process with the global batch; a run killed with
SIGKILL mid-epoch and resumed with ``--resume auto`` ends exactly where an uninterrupted run ends."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from fact_fast.utils.checkpoint import load_checkpoint
from tests.helpers import REPO_ROOT as ROOT

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p),
       "OMP_NUM_THREADS": "1"}
# fact_test with data-independent initialisation and frozen BatchNorm statistics: the function a
# DDP rank computes on its half batch is then exactly the single-process function on the full batch
COMMON = ["--model", "fact_test", "--image-size", "32", "--dataset-kwargs", "num_samples=64", "--no-progress",
          "--threads", "1", "--warmup-epochs", "0.5", "--epochs", "2"]


def _run(args, timeout=600):
    res = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=timeout)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def _log(out):
    with open(os.path.join(out, "metrics.jsonl")) as fh:
        return [json.loads(line) for line in fh]


def _weights(path):
    return {k: v for k, v in load_checkpoint(path).model.items()
            if isinstance(v, torch.Tensor) and v.is_floating_point()}


@pytest.mark.slow
def test_torchrun_two_processes_match_one_process_with_the_global_batch(tmp_path):
    # SGD: an update proportional to the gradient, so a wrongly scaled or partial gradient shows up in
    # the weights (Adam's normalisation would hide the scale and amplify float rounding noise)
    exact = ["--model-kwargs", "init_tau=1.0", "--model-kwargs", "vq_data_init=false", "--freeze-bn",
             "--no-eval-test", "--optimizer", "sgd", "--lr", "0.05"]
    single, ddp = str(tmp_path / "single"), str(tmp_path / "ddp")
    _run([sys.executable, "-m", "fact_fast.train", *COMMON, *exact, "--batch-size", "16", "--out", single])
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
          "-m", "fact_fast.train", *COMMON, *exact, "--batch-size", "8", "--out", ddp])
    a, b = _log(single), _log(ddp)
    assert [r["step"] for r in a] == [r["step"] for r in b] == [4, 8]
    for ra, rb in zip(a, b):
        assert rb["train_total"] == pytest.approx(ra["train_total"], rel=1e-4)
        assert rb["val_mAP"] == pytest.approx(ra["val_mAP"], abs=1e-4)
    wa, wb = _weights(os.path.join(single, "last.pt")), _weights(os.path.join(ddp, "last.pt"))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.allclose(wa[k], wb[k], rtol=1e-4, atol=1e-5), k


KILLER = textwrap.dedent("""
    # Runs the trainer and SIGKILLs the process right after optimizer step KILL_AT (mid-epoch):
    # no handler, no cleanup, exactly what an OOM kill or a preempted node does.
    import os, signal, sys
    import torch
    kill_at = int(os.environ["KILL_AT"])
    import fact_fast.engine.loop as loop
    real = loop.train_one_epoch
    count = {"n": 0}
    def wrapped(*a, **k):
        opt = a[3]
        step = opt.step
        def counting_step(*sa, **sk):
            out = step(*sa, **sk)
            count["n"] += 1
            if count["n"] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return out
        opt.step = counting_step
        try:
            return real(*a, **k)
        finally:
            opt.step = step
    loop.train_one_epoch = wrapped
    import fact_fast.engine.trainer as trainer
    trainer.train_one_epoch = wrapped
    from fact_fast.train import main
    sys.exit(main(sys.argv[1:]))
""")


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_auto_matches_uninterrupted_run(tmp_path):
    # fact_tiny: the default model, with VQ dead-code restarts every 10 steps (their window must survive)
    args = ["--model", "fact_tiny", "--image-size", "32", "--dataset-kwargs", "num_samples=192", "--batch-size",
            "16", "--no-progress", "--threads", "1", "--epochs", "3"]
    clean, killed = str(tmp_path / "clean"), str(tmp_path / "killed")
    _run([sys.executable, "-m", "fact_fast.train", *args, "--out", clean])
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    # 12 steps per epoch: step 18 is the middle of epoch 2
    res = subprocess.run([sys.executable, str(script), *args, "--out", killed], capture_output=True, text=True,
                         cwd=ROOT, env={**ENV, "KILL_AT": "18"}, timeout=600)
    assert res.returncode == -signal.SIGKILL, res.stdout[-2000:] + res.stderr[-2000:]
    assert [r["epoch"] for r in _log(killed)] == [1]
    assert load_checkpoint(os.path.join(killed, "last.pt")).epoch == 1
    _run([sys.executable, "-m", "fact_fast.train", "--out", killed, "--resume", "auto", "--no-progress"])
    a, b = _log(clean), _log(killed)
    assert [r["epoch"] for r in b] == [1, 2, 3]
    for ra, rb in zip(a, b):
        for key in ("train_total", "val_mAP", "tau", "codebook_perplexity"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-6, abs=1e-9), (ra["epoch"], key)
    with open(os.path.join(clean, "metrics_test.json")) as fh:
        ta = json.load(fh)
    with open(os.path.join(killed, "metrics_test.json")) as fh:
        tb = json.load(fh)
    for key in ("mAP", "macro_auc", "f1_micro"):
        assert tb[key] == pytest.approx(ta[key], rel=1e-6), key
    wa, wb = _weights(os.path.join(clean, "last.pt")), _weights(os.path.join(killed, "last.pt"))
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
