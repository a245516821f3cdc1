"""python -m fact_fast.selftest on this machine (CPU: reference, cpu and the Triton interpreter)."""
import json
import os
import struct
import subprocess
import sys

import pytest
import torch

from fact_fast import _extension, selftest
from fact_fast.ops import _backend
from fact_fast.testing.environment import fatbin_archs
from fact_fast.testing.matrix import OPS, QUICK_CASES, QUICK_DTYPES
from tests.helpers import REPO_ROOT as REPO


def _run(tmp_path, *args):
    out = tmp_path / "selftest.json"
    code = selftest.main(["--device", "cpu", "--json", str(out), *args])
    return code, json.loads(out.read_text())




def _clean_env(**extra) -> dict:
    """A plain shell's environment: no TRITON_INTERPRET (or anything else) inherited from this process."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"),
           "PYTHONPATH": REPO, "FACT_FAST_REQUIRE_EXTENSION": os.environ.get("FACT_FAST_REQUIRE_EXTENSION", "0")}
    return {**env, **extra}


def test_quick_selftest_passes_from_a_plain_shell(tmp_path):
    # Exactly the README's command, from a shell that has not exported TRITON_INTERPRET: the selftest
    # itself must switch the interpreter on before Triton is imported.
    out = tmp_path / "selftest.json"
    done = subprocess.run([sys.executable, "-m", "fact_fast.selftest", "--quick", "--json", str(out)],
                          capture_output=True, text=True, env=_clean_env(), cwd=tmp_path, timeout=600)
    printed = done.stdout + done.stderr
    assert done.returncode == 0, printed
    doc = json.loads(out.read_text())
    assert doc["complete"] and doc["summary"]["failed"] == 0 and doc["summary"]["errors"] == 0
    results = doc["results"]
    assert {r["op"] for r in results} == set(OPS)
    expected = {"cpu"} if _extension.has_kernel("vq_nearest", "cpu") else set()
    if doc["environment"]["device"] == "cpu":
        assert doc["environment"]["triton_interpret"]
        assert "triton" in doc["environment"]["backends"]["vq_nearest"]
        expected.add("triton")
    elif "triton" in doc["environment"]["backends"]["vq_nearest"]:
        expected.add("triton")
    assert {r["backend"] for r in results} >= expected and expected
    assert {r["case"] for r in results} == set(QUICK_CASES)
    assert {r["dtype"] for r in results} == set(QUICK_DTYPES)
    assert all(r["status"] == "pass" and r["worst_ratio"] <= 1 for r in results)
    for line in ("torch", "triton", "fact_fast._C", "backends"):
        assert line in printed
    table = done.stdout.split(selftest.HEADER, 1)[1].split("\n\n", 1)[0]  # the result rows, up to the totals
    rows = [line.split() for line in table.splitlines() if line.split()[:1] and line.split()[0] in OPS]
    groups = {(r["op"], r["backend"], r["dtype"]) for r in results}
    assert len(rows) == len(groups) and {(row[0], row[1], row[2]) for row in rows} == groups
    assert all(row[4] == "PASS" for row in rows), done.stdout
    assert "FAIL" not in printed


def test_an_interpreter_switched_on_too_late_is_a_clear_error(tmp_path):
    # Importing fact_fast.ops imports triton.language compiled; exporting the variable afterwards
    # cannot make it interpreted, and the launch must say why instead of failing inside Triton.
    script = (
        "import os, torch\n"
        "from fact_fast import ops\n"
        "os.environ['TRITON_INTERPRET'] = '1'\n"
        "z = torch.randn(5, 4)\n"
        "try:\n"
        "    ops.vq_nearest(z, torch.randn(3, 4), backend='triton')\n"
        "except RuntimeError as err:\n"
        "    print('ERROR', err)\n"
        "else:\n"
        "    print('RAN')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=_clean_env(),
                          cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    if torch.cuda.is_available():
        pytest.skip("with a GPU the variable is never needed")
    assert done.stdout.startswith("ERROR"), done.stdout + done.stderr
    assert "TRITON_INTERPRET=1 was set after triton was imported" in done.stdout
    assert "outside of the scope of a kernel" not in done.stdout


def _break(monkeypatch, op, backend, fn):
    impl = _backend._registry[op][backend]
    monkeypatch.setitem(_backend._registry[op], backend, _backend.Impl(fn, impl.supports))
    return impl.fn


def test_a_wrong_backend_fails_with_a_nonzero_exit(tmp_path, monkeypatch, capsys):
    backend = "cpu" if _extension.has_kernel("fuzzy_loss", "cpu") else "triton"
    real = _backend._registry["fuzzy_loss"][backend].fn

    def off_by_a_little(*args):
        loss, mu = real(*args)
        return loss * 1.001, mu  # 0.1 % off: far outside the fp32 bound

    _break(monkeypatch, "fuzzy_loss", backend, off_by_a_little)
    code, doc = _run(tmp_path, "--quick", "--ops", "fuzzy_loss", "--dtypes", "fp32", "--backends", backend)
    assert code == 1
    failed = [r for r in doc["results"] if r["status"] == "fail"]
    assert failed and all(r["worst_ratio"] > 1 for r in failed)
    for r in failed:
        assert {c["what"]: c["ratio"] for c in r["checks"]}["loss"] > 1
    empty = [r for r in doc["results"] if r["case"] == "empty"]
    assert empty and empty[0]["status"] == "pass"  # a zero loss stays zero: only real cases catch it
    assert "FAILED fuzzy_loss" in capsys.readouterr().out


def test_a_crashing_backend_is_an_error_with_a_nonzero_exit(tmp_path, monkeypatch):
    backend = "cpu" if _extension.has_kernel("gcn_propagate", "cpu") else "triton"

    def crash(*args, **kwargs):
        raise RuntimeError("kernel launch failed")

    _break(monkeypatch, "gcn_propagate", backend, crash)
    code, doc = _run(tmp_path, "--quick", "--ops", "gcn_propagate", "--dtypes", "fp32", "--backends", backend)
    assert code == 1
    assert doc["summary"]["errors"] == len(doc["results"]) > 0
    assert "kernel launch failed" in doc["results"][0]["message"]


def test_wrong_gradient_fails(tmp_path, monkeypatch):
    backend = "cpu" if _extension.has_kernel("sigmoid_interface", "cpu") else "triton"
    real = _backend._registry["sigmoid_interface"][backend].fn

    class HalfGradient(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, g):
            return g * 0.5

    _break(monkeypatch, "sigmoid_interface", backend, lambda q, v, bias: real(HalfGradient.apply(q), v, bias))
    code, doc = _run(tmp_path, "--quick", "--ops", "sigmoid_interface", "--dtypes", "fp32", "--backends", backend)
    assert code == 1
    assert {r["worst"] for r in doc["results"] if r["status"] == "fail"} == {"dq"}


def _fatbin(entries):
    """A CUDA fat binary: 16-byte header, then per entry a 64-byte header and a payload."""
    body = b""
    for kind, sm, payload in entries:
        header = struct.pack("<HHIIIIII", kind, 0x101, 64, len(payload), 0, len(payload), 0, 0)
        header += struct.pack("<I", sm) + bytes(64 - 32)
        body += header + payload
    return struct.pack("<IHHQ", 0xBA55ED50, 1, 16, len(body)) + body


def test_fatbin_archs_reads_machine_code_and_ptx(tmp_path):
    lib = tmp_path / "lib.so"
    lib.write_bytes(b"\x7fELF junk" + _fatbin([(2, 80, b"s" * 40), (2, 90, b"t" * 24)]) + b"more"
                    + _fatbin([(1, 90, b".target sm_90")]) + b"\x50\xed\x55\xba stray magic")
    assert fatbin_archs(str(lib)) == {"sass": ["sm_80", "sm_90"], "ptx": ["sm_90"]}


@pytest.mark.skipif(not _extension.built_with_cuda(), reason="extension built without CUDA")
def test_fatbin_archs_of_the_built_extension():
    from fact_fast import _C
    archs = fatbin_archs(_C.__file__)
    assert archs["sass"], "no GPU machine code found in fact_fast._C"
    assert all(a.startswith("sm_") for a in archs["sass"] + archs["ptx"])


def test_command_line(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-m", "fact_fast.selftest", "--device", "cpu", "--quick", "--ops",
                           "vq_nearest", "--dtypes", "fp32", "--time-reps", "2"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "vq_nearest" in done.stdout and "0 failed, 0 errors" in done.stdout
    bad = subprocess.run([sys.executable, "-m", "fact_fast.selftest", "--ops", "nope"], capture_output=True,
                         text=True, env=env, timeout=600)
    assert bad.returncode != 0 and "unknown op" in bad.stderr
