"""What every Triton launcher shares (kernels/_launch.py) and where the kernels live.

- The kernels are the top-level ``kernels/`` package, importable as ``fact_fast.kernels`` from a
  source tree (this file's subprocesses) as from an install, and they import only torch/triton.
- Every kernel launch runs with its tensors' device made current and with floating-point fusion
  set explicitly (recorded by patching the interpreter's launch entry point).
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from tests.helpers import REPO_ROOT as ROOT

KERNELS = os.path.join(ROOT, "kernels")
ALLOWED_IMPORTS = {"__future__", "torch", "triton", "os", "contextlib", "functools", "typing", "collections", "math"}


def _kernel_files():
    return sorted(f for f in os.listdir(KERNELS) if f.endswith(".py"))


@pytest.mark.parametrize("name", _kernel_files())
def test_kernel_modules_import_only_torch_and_triton(name):
    tree = ast.parse(open(os.path.join(KERNELS, name)).read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots = [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level > 0:  # relative: another kernel module
                continue
            roots = [node.module.split(".")[0]]
        else:
            continue
        assert set(roots) <= ALLOWED_IMPORTS, f"kernels/{name} imports {roots} (kernels know tensors only)"


def _python(code: str, pythonpath: str, cwd: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TRITON_INTERPRET")}
    env["PYTHONPATH"] = pythonpath
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_source_tree_resolves_fact_fast_kernels(tmp_path):
    out = _python("""
        import fact_fast.kernels
        from fact_fast.kernels import vq, attention, fuzzy, gcn
        import fact_fast
        print(fact_fast.kernels.__file__)
        print(vq.__file__)
        print(vq.__name__)
    """, ROOT, str(tmp_path))
    init, vq_file, names = out.split("\n")[:3]
    assert init == os.path.join(KERNELS, "__init__.py")
    assert vq_file == os.path.join(KERNELS, "vq.py")
    assert names == "fact_fast.kernels.vq"


def test_stale_package_directory_does_not_hide_the_source_kernels(tmp_path):
    """A checkout that still has fact_fast/kernels/__pycache__ (from before the move) must not turn
    fact_fast.kernels into an empty namespace package."""
    (tmp_path / "fact_fast" / "kernels" / "__pycache__").mkdir(parents=True)
    (tmp_path / "fact_fast" / "__init__.py").write_text(open(os.path.join(ROOT, "fact_fast", "__init__.py")).read())
    os.symlink(KERNELS, tmp_path / "kernels")
    out = _python("from fact_fast.kernels import _launch; print(_launch.__file__)", str(tmp_path), str(tmp_path))
    assert out.strip() == str(tmp_path / "kernels" / "_launch.py")


def test_installed_kernels_win_over_a_sibling_kernels_directory(tmp_path):
    """In an installed tree (fact_fast/kernels present) a ``kernels`` package beside fact_fast is never used."""
    pkg = tmp_path / "fact_fast"
    (pkg / "kernels").mkdir(parents=True)
    (pkg / "__init__.py").write_text(open(os.path.join(ROOT, "fact_fast", "__init__.py")).read())
    (pkg / "kernels" / "__init__.py").write_text("WHERE = 'installed'\n")
    (tmp_path / "kernels").mkdir()
    (tmp_path / "kernels" / "__init__.py").write_text("raise ImportError('sibling kernels package was used')\n")
    out = _python("import fact_fast.kernels as k; print(k.WHERE)", str(tmp_path), str(tmp_path))
    assert out.strip() == "installed"


def test_setup_installs_kernels_as_fact_fast_kernels():
    src = open(os.path.join(ROOT, "setup.py")).read()
    assert '"fact_fast.kernels": "kernels"' in src and '+ ["fact_fast.kernels", "fact_fast.configs"]' in src


# --- launches: device and compile options ------------------------------------------------------

def test_device_guard_selects_the_tensor_device():
    from fact_fast.kernels import _launch
    guard = _launch.device_guard(torch.device("cuda", 1))
    assert isinstance(guard, torch.cuda.device) and guard.idx == 1
    cpu_guard = _launch.device_guard(torch.device("cpu"))
    assert not isinstance(cpu_guard, torch.cuda.device)


@pytest.fixture
def launches(monkeypatch):
    """Records (kernel name, device made current, launch kwargs) of every interpreted kernel launch."""
    pytest.importorskip("triton")
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("records interpreter launches")
    import contextlib

    from triton.runtime.interpreter import InterpretedFunction

    from fact_fast.kernels import _launch
    active: list = []
    seen: list = []

    @contextlib.contextmanager
    def recording_guard(device):
        active.append(device)
        try:
            yield
        finally:
            active.pop()

    real_run = InterpretedFunction.run

    def run(self, *args, **kwargs):
        seen.append((self.fn.__name__, active[-1] if active else None, dict(kwargs)))
        return real_run(self, *args, **kwargs)

    monkeypatch.setattr(_launch, "device_guard", recording_guard)
    monkeypatch.setattr(InterpretedFunction, "run", run)
    return seen


def _every_launcher(device):
    """Calls every public launcher of every kernel module, on small inputs, in every variant."""
    from fact_fast.kernels import attention, fuzzy, gcn, vq
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=g).to(device)

    z, cb = rand(20, 12), rand(70, 12)
    for splits in (1, 2):
        vq.nearest(z, cb, want_dist=True, want_quantized=False, splits=splits)
        vq.nearest(z, cb, want_dist=False, want_quantized=True, splits=splits)
    index = vq.nearest(z, cb, want_dist=True, want_quantized=False)[0]
    w = torch.ones(1, device=device)
    for deterministic in (True, False):
        vq.residual_backward(z, cb, index, rand(20, 12), w, w, deterministic)
    q, k, v = rand(2, 5, 16), rand(2, 7, 16), rand(2, 7, 8)
    attention.attention_forward(q, k, v, 0.25, 0.1, residual=False)
    attention.attention_backward(rand(2, 5, 8), q, k, v, 0.25, 0.1, kv_shared=False)
    attention.attention_backward(rand(2, 5, 16), q, k, k, 0.25, 0.1, kv_shared=True)
    e, s = rand(3, 4, 8), rand(4, 8)
    y = (rand(3, 4) > 0).float()
    tau = torch.tensor(2.0, device=device)
    for logit in ("scaled", "log"):
        _, _, stats = fuzzy.fuzzy_forward(e, s, y, tau, 0.5, 4.0, 0.5, 1e-3, "mean", logit)
        fuzzy.fuzzy_backward(torch.tensor(1.0, device=device), None, e, s, y, tau, stats, 0.5, 4.0, 0.5, "mean",
                             logit)
    rowptr = torch.tensor([0, 2, 3, 5], device=device)
    col = torch.tensor([0, 1, 2, 0, 2], device=device)
    x, dinv = rand(3, 6), torch.ones(3, device=device)
    gcn.spmm(x, rowptr, col, None, dinv, True)
    gcn.value_grad(rand(3, 6), x, rowptr, col, torch.ones(5, device=device), dinv, rand(3, 6), True, True)
    return attention, fuzzy, gcn, vq


def _jit_kernels(module) -> set[str]:
    return {name for name in vars(module) if name.endswith("_kernel")}


def test_every_launch_runs_on_its_tensors_device_with_explicit_fp_fusion(launches):
    from fact_fast.kernels import _launch
    modules = _every_launcher("cpu")
    assert launches
    for name, device, kwargs in launches:
        if not name.endswith("_kernel"):  # @triton.jit helpers called from a kernel
            continue
        assert device == torch.device("cpu"), f"{name} was launched outside its tensors' device guard"
        assert kwargs.get("enable_fp_fusion") is _launch.FP_FUSION, f"{name}: floating-point fusion not set"
    launched = {name for name, _, _ in launches}
    for module in modules:
        missing = _jit_kernels(module) - launched
        assert not missing, f"not exercised: {missing}"


@pytest.mark.cuda
def test_launchers_use_the_tensors_device_not_the_current_one():
    """Tensors on cuda:1 while cuda:0 is current: every op matches the reference computed on cuda:1."""
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    from fact_fast import ops
    from fact_fast.ops import reference
    torch.cuda.set_device(0)
    dev = torch.device("cuda", 1)
    g = torch.Generator().manual_seed(0)
    z, cb = torch.randn(300, 24, generator=g).to(dev), torch.randn(130, 24, generator=g).to(dev)
    index, _ = ops.vq_nearest(z, cb, backend="triton")
    assert torch.equal(index, reference.vq_nearest(z, cb)[0])
    q, k, v = (torch.randn(2, 9, 32, generator=g).to(dev).requires_grad_() for _ in range(3))
    out = ops.sigmoid_attention(q, k, v, backend="triton")
    torch.testing.assert_close(out, reference.sigmoid_attention(q, k, v), atol=2e-3, rtol=2e-3)
    out.sum().backward()
    assert q.grad.device == dev
    e, s = torch.randn(4, 6, 16, generator=g).to(dev), torch.randn(6, 16, generator=g).to(dev)
    y = (torch.rand(4, 6, generator=g) > 0.5).float().to(dev)
    loss, _ = ops.fuzzy_loss(e, s, y, 8.0, backend="triton")
    torch.testing.assert_close(loss, reference.fuzzy_loss(e, s, y, 8.0)[0], atol=1e-5, rtol=1e-4)
    x = torch.randn(5, 8, generator=g).to(dev)
    rowptr, col = torch.tensor([0, 2, 3, 3, 5, 6], device=dev), torch.tensor([1, 2, 0, 4, 3, 1], device=dev)
    torch.testing.assert_close(ops.gcn_propagate(x, rowptr, col, backend="triton"),
                               reference.gcn_propagate(x, rowptr, col), atol=1e-5, rtol=1e-5)
    assert torch.cuda.current_device() == 0


def test_multi_config_launches_build_valid_autotuners(monkeypatch):
    """The GPU path wraps kernels with several candidate configs in triton.autotune: every key must
    name a kernel argument (Triton rejects others), configs must not repeat, and no tuned block size
    may also be passed by the launcher. Checked for the GPU's launches (the launchers believe they
    are not interpreted), building each autotuner without running it (that needs a GPU)."""
    pytest.importorskip("triton")
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("the GPU runs the real autotuner in the backend tests")
    from fact_fast.kernels import _launch, attention, vq
    built = set()

    def building_launch(kernel, grid, *args, configs, key=(), **constexprs):
        if len(configs) > 1:
            frozen = tuple((tuple(sorted(block.items())), warps, stages) for block, warps, stages in configs)
            assert len(set(frozen)) == len(frozen), f"{kernel.fn.__name__}: repeated configs"
            tuner = _launch._autotuner(kernel, frozen, tuple(key))
            assert set(key) <= set(tuner.arg_names) and len(tuner.configs) == len(configs)
            overlap = {name for block, _, _ in configs for name in block} & set(constexprs)
            assert not overlap, f"{kernel.fn.__name__}: {overlap} both tuned and passed"
            built.add(kernel.fn.__name__)

    for module in (attention, vq):
        monkeypatch.setattr(module, "launch", building_launch)
        monkeypatch.setattr(module, "interpreting", lambda: False)
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float16):
        for d in (24, 100, 300):  # the head-dim classes of the candidate lists
            q, k, v = (torch.randn(2, 90, d, generator=g).to(dtype) for _ in range(3))
            attention.attention_forward(q, k, v, 0.2, 0.0, residual=False)
            attention.attention_backward(torch.randn(2, 90, d, generator=g).to(dtype), q, k, v, 0.2, 0.0,
                                         kv_shared=False)
        for d in (12, 600):  # resident and chunked z
            z, cb = torch.randn(40, d, generator=g).to(dtype), torch.randn(300, d, generator=g).to(dtype)
            vq.nearest(z, cb, want_dist=True, want_quantized=False)
    assert built == {"_attention_fwd_kernel", "_attention_bwd_kv_kernel", "_attention_bwd_q_kernel",
                     "_search_kernel"}
