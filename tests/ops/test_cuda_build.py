"""What the CUDA build of fact_fast._C promises: the architectures it was built for (PTX included, so
GPUs newer than the list can JIT-compile it) and the CuTe kernels when the CUTLASS headers are there.
The build checks run in a FACT_FAST_FORCE_CUDA=1 build (CI's), whose settings are the defaults."""
import ast
import importlib.util
import os
import re

import pytest

from fact_fast import _extension
from tests.helpers import REPO_ROOT as ROOT

FORCED_CUDA = os.environ.get("FACT_FAST_FORCE_CUDA") == "1"
forced_cuda_build = pytest.mark.skipif(not (FORCED_CUDA and _extension.load() and _extension.built_with_cuda()),
                                       reason="only meaningful for a FACT_FAST_FORCE_CUDA=1 build")


def _default_arch_list() -> str:
    tree = ast.parse(open(os.path.join(ROOT, "setup.py")).read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "DEFAULT_CUDA_ARCH_LIST" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("setup.py defines no DEFAULT_CUDA_ARCH_LIST")


def _module():
    from fact_fast import _C
    return _C


def test_default_arch_list_ships_ptx_for_newer_gpus():
    archs = _default_arch_list().split(";")
    assert archs[-1].endswith("+PTX"), archs
    assert {"8.0", "9.0"} <= {a.removesuffix("+PTX") for a in archs}


@forced_cuda_build
def test_extension_reports_the_arch_list_it_was_built_for():
    expected = os.environ.get("TORCH_CUDA_ARCH_LIST") or _default_arch_list()
    assert _module().CUDA_ARCH_LIST == "/".join(re.split(r"[;, ]+", expected.strip()))


@forced_cuda_build
def test_extension_embeds_the_ptx_its_arch_list_promises():
    ptx = [a.removesuffix("+PTX") for a in _module().CUDA_ARCH_LIST.split("/") if a.endswith("+PTX")]
    if not ptx:
        pytest.skip(f"built without PTX (arch list {_module().CUDA_ARCH_LIST!r})")
    with open(_module().__file__, "rb") as f:
        binary = f.read()
    for arch in ptx:  # the compute_XX PTX text nvcc embeds in the fat binary
        assert f".target sm_{arch.replace('.', '')}".encode() in binary, arch


@forced_cuda_build
def test_cute_kernels_are_built_when_the_cutlass_headers_are_found():
    found = os.environ.get("FACT_FAST_SKIP_CUTLASS") != "1" and _cutlass_dir_module().find_include() is not None
    assert bool(_module().WITH_CUTLASS) == found


def _cutlass_dir_module():
    spec = importlib.util.spec_from_file_location("cutlass_dir", os.path.join(ROOT, "scripts", "cutlass_dir.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cutlass_dir_accepts_a_checkout_or_an_include_directory(tmp_path, monkeypatch):
    find_include = _cutlass_dir_module().find_include
    checkout = tmp_path / "cutlass"
    (checkout / "include" / "cute").mkdir(parents=True)
    (checkout / "include" / "cute" / "tensor.hpp").write_text("")
    monkeypatch.setenv("CUTLASS_DIR", str(checkout))
    assert find_include() == str(checkout / "include")
    monkeypatch.setenv("CUTLASS_DIR", str(checkout / "include"))
    assert find_include() == str(checkout / "include")
    monkeypatch.setenv("CUTLASS_DIR", str(tmp_path))
    with pytest.raises(ValueError, match="CUTLASS_DIR"):
        find_include()


def test_cutlass_dir_prefers_a_staged_copy_and_finds_none_without_headers(tmp_path, monkeypatch):
    module = _cutlass_dir_module()
    monkeypatch.delenv("CUTLASS_DIR", raising=False)
    monkeypatch.setattr(module.importlib.util, "find_spec", lambda name: None)  # no wheel
    monkeypatch.setattr(module, "STAGED", str(tmp_path / "include"))
    assert module.find_include() is None
    (tmp_path / "include" / "cute").mkdir(parents=True)
    (tmp_path / "include" / "cute" / "tensor.hpp").write_text("")
    assert module.find_include() == str(tmp_path / "include")
