"""scripts/gpu_check.sh: its dry run parses, lists every step, and every command it would run
is accepted by the command-line parser it calls (so the runbook cannot drift from the CLIs)."""
import importlib.util
import json
import os
import shlex
import subprocess
import sys

import pytest
import torch
from tests.helpers import REPO_ROOT as ROOT

SCRIPT = os.path.join(ROOT, "scripts", "gpu_check.sh")
STEPS = ["env", "build", "selftest", "tests", "bench_fp32", "bench_bf16", "fuzzy_launches", "memcheck", "racecheck",
         "train_step"]


def _run(*args):
    env = dict(os.environ, PYTHON=sys.executable)
    return subprocess.run(["bash", SCRIPT, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def _steps(stdout):
    steps = {}
    for line in stdout.splitlines():
        if line.startswith("STEP "):
            head, command = line[5:].split(": ", 1)
            name, budget = head.split(" budget=")
            steps[name] = (int(budget.rstrip("s")), command)
    return steps


def _load_script(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "scripts", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _parsers():
    from benchmarks import run as bench_run
    from benchmarks import train_step
    from benchmarks.ops import fuzzy as fuzzy_bench
    from fact_fast import selftest
    return {"fact_fast.selftest": selftest.parse_args, "benchmarks.run": bench_run.parse_args,
            "benchmarks.train_step": train_step.parse_args, "benchmarks.ops.fuzzy": fuzzy_bench.parse_args,
            "scripts/gpu_sanitize.py": _load_script("gpu_sanitize").parse_args}


def test_dry_run_lists_every_step_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    done = _run(str(out), "--dry-run")
    assert done.returncode == 0, done.stderr
    steps = _steps(done.stdout)
    assert list(steps) == STEPS
    assert not out.exists()
    assert all(budget > 0 for budget, _ in steps.values())
    build = steps["build"][1]
    assert "pip install -e . --no-build-isolation --no-deps" in build and "TORCH_CUDA_ARCH_LIST=" in build
    assert "-m cuda" in steps["tests"][1] and "compute-sanitizer" not in steps["tests"][1]
    assert "--tool memcheck" in steps["memcheck"][1] and "--tool racecheck" in steps["racecheck"][1]
    for name in ("selftest", "bench_fp32", "bench_bf16", "train_step"):
        assert str(out) in steps[name][1], name  # results go under OUTDIR


def test_every_python_command_is_accepted_by_its_parser(tmp_path):
    steps = _steps(_run(str(tmp_path / "o"), "--dry-run").stdout)
    parsers = _parsers()
    checked = set()
    for _, command in steps.values():
        for part in command.split("&&"):
            words = shlex.split(part)
            for i, word in enumerate(words):
                target = words[i + 1] if word == "-m" and i + 1 < len(words) else word
                if target in parsers:
                    start = i + 2 if word == "-m" else i + 1
                    parsers[target](words[start:])  # raises SystemExit on an unknown flag
                    checked.add(target)
                    break
    assert checked == set(parsers)


def test_step_selection_and_bad_arguments(tmp_path):
    done = _run(str(tmp_path), "--dry-run", "--steps", "bench_bf16,memcheck")
    assert done.returncode == 0 and list(_steps(done.stdout)) == ["bench_bf16", "memcheck"]
    assert "build" not in _steps(_run(str(tmp_path), "--dry-run", "--skip-build").stdout)
    for args, message in ((["--dry-run"], "OUTDIR is required"), ([str(tmp_path), "--steps", "nope"], "unknown step"),
                          ([str(tmp_path), "--budget", "ten"], "--budget"), ([str(tmp_path), "--bogus"], "unknown option")):
        bad = _run(*args)
        assert bad.returncode == 2 and message in bad.stderr, (args, bad.stderr)


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine this would run the whole GPU pass")
def test_without_a_gpu_it_falls_back_to_the_dry_run(tmp_path):
    done = _run(str(tmp_path / "out"))
    assert done.returncode == 0
    assert "no CUDA GPU" in done.stdout and list(_steps(done.stdout)) == STEPS
    assert not (tmp_path / "out").exists()


def test_the_runner_limits_each_step_and_keeps_going(tmp_path):
    """With a stand-in python that reports a GPU, run a steps file: one ok, one failing, one past
    its time limit, one that reads stdin (it must not eat the steps table), one left without time."""
    fake_python = tmp_path / "python"
    fake_python.write_text(f"""#!/bin/bash
case "$*" in
  *torch.cuda.is_available*) exit 0 ;;
  *get_device_capability*) echo 9.0; exit 0 ;;
  *"import xdist"*) exit 1 ;;
esac
exec {sys.executable} "$@"
""")
    fake_python.chmod(0o755)
    steps = tmp_path / "steps"
    steps.write_text("# name|seconds|command\n"
                     "first|20|echo hello from first\n"
                     "broken|20|echo about to fail; exit 3\n"
                     "slow|10|sleep 60\n"
                     "reader|20|cat; echo reader done; sleep 6\n"
                     "late|20|echo never printed\n")
    out = tmp_path / "out"
    env = dict(os.environ, PYTHON=str(fake_python))
    done = subprocess.run(["bash", SCRIPT, str(out), "--steps-file", str(steps), "--budget", "27"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    summary = json.loads((out / "gpu_check.json").read_text())
    status = {s["step"]: s["status"] for s in summary["steps"]}
    assert status == {"first": "ok", "broken": "failed", "slow": "timeout", "reader": "ok", "late": "skipped"}
    assert {s["step"]: s["exit_code"] for s in summary["steps"]}["broken"] == 3
    assert summary["ok"] is False and summary["complete"] is False and summary["cuda_arch"] == "9.0"
    assert summary["elapsed_seconds"] <= 27
    log = (out / "gpu_check.log").read_text()
    assert "hello from first" in log and "reader done" in log and "never printed" not in log
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.json", "gpu_check.log"]


def _fake_sanitizer(tmp_path, monkeypatch, body):
    exe = tmp_path / "bin" / "compute-sanitizer"
    exe.parent.mkdir(exist_ok=True)
    exe.write_text("#!/bin/bash\n" + body)
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{exe.parent}{os.pathsep}{os.environ['PATH']}")


def test_sanitize_reads_the_error_summary(tmp_path, monkeypatch):
    sanitize = _load_script("gpu_sanitize").sanitize
    monkeypatch.setenv("PATH", str(tmp_path))  # no compute-sanitizer anywhere
    if not os.path.exists("/usr/local/cuda/bin/compute-sanitizer"):
        assert sanitize("memcheck", ["vq"], 10)["status"] == "unavailable"
    _fake_sanitizer(tmp_path, monkeypatch, 'echo "sanitize case vq: done"; echo "========= ERROR SUMMARY: 0 errors"\n')
    result = sanitize("memcheck", ["vq"], 10)
    assert result["status"] == "clean" and result["errors"] == 0 and result["kernel_filter"] == "kns=fact_fast"
    _fake_sanitizer(tmp_path, monkeypatch, 'echo "sanitize case vq: done"; echo "========= ERROR SUMMARY: 2 errors"; '
                                           'exit 86\n')
    assert sanitize("memcheck", ["vq"], 10)["status"] == "errors"
    # a case that crashed before finishing is not clean, even with no error reported
    _fake_sanitizer(tmp_path, monkeypatch, 'echo "========= ERROR SUMMARY: 0 errors"; exit 1\n')
    assert sanitize("memcheck", ["vq"], 10)["status"] == "errors"
    # an older compute-sanitizer without --kernel-name: retried unfiltered
    _fake_sanitizer(tmp_path, monkeypatch, 'case "$*" in *--kernel-name*) echo "unrecognised option"; exit 1 ;; esac\n'
                                           'echo "sanitize case vq: done"; echo "ERROR SUMMARY: 0 errors"\n')
    result = sanitize("racecheck", ["vq"], 10)
    assert result["status"] == "clean" and result["kernel_filter"] is None
    # a device the tool cannot use (no summary at all)
    _fake_sanitizer(tmp_path, monkeypatch, 'echo "Device not supported"; exit 1\n')
    assert sanitize("memcheck", ["vq"], 10)["status"] == "unavailable"


def test_sanitizer_cases_run_here_on_the_cpu_backend(capsys):
    from fact_fast import _extension, ops  # noqa: F401 - importing ops loads the extension
    if not _extension.has_kernel("fuzzy_loss", "cpu"):
        pytest.skip("compiled cpu backend not built")
    module = _load_script("gpu_sanitize")
    module.run_cases(list(module.FAMILIES), device="cpu", backend="cpu")  # the same calls, on the C++ kernels
    printed = capsys.readouterr().out
    assert all(f"sanitize case {f}: done" in printed for f in module.FAMILIES)
