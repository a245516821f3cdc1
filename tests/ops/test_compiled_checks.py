"""Argument checks of every compiled entry point (fact_fast._C), CPU and CUDA registrations alike.

A kernel handed a pointer to another device's memory reads garbage or kills the CUDA context, so each
registration must check every tensor argument's device before it converts or launches anything. The
registrations are called directly (``OpOverload.redispatch`` with the CPU or CUDA dispatch key),
bypassing the Python front-end's own checks. On a machine without a GPU the CUDA registrations still
run their checks: tensors on the ``meta`` device stand in for "another device" (a launch would never
be reached). With a GPU, the same cases run with real CUDA tensors.
"""
from __future__ import annotations

import re

import pytest
import torch

from fact_fast import _extension

pytestmark = pytest.mark.skipif(not _extension.load(), reason="fact_fast._C not built")


def _fuzzy(b=2, c=3, d=4):
    return dict(e=torch.randn(b, c, d), s=torch.randn(c, d), y=(torch.rand(b, c) > 0.5).float(),
                tau=torch.tensor(1.0))


def _vq(n=5, k=3, d=4):
    return dict(z=torch.randn(n, d), codebook=torch.randn(k, d), index=torch.tensor([0, 1, 2, 1, 0]),
                grad_out=torch.randn(n, d), z_weight=torch.rand(n), codebook_weight=torch.rand(n))


def _gcn():
    rowptr, col = torch.tensor([0, 1, 2, 3]), torch.tensor([1, 2, 0])
    return dict(x=torch.randn(3, 2), rowptr=rowptr, col=col, value=torch.rand(3), dinv=torch.rand(3),
                t_rowptr=rowptr.clone(), t_col=torch.tensor([2, 0, 1]), t_perm=torch.tensor([2, 0, 1]),
                grad=torch.randn(3, 2), dx=torch.randn(3, 2))


def _attention():
    return dict(q=torch.randn(2, 3, 4), k=torch.randn(2, 5, 4), v=torch.randn(2, 5, 6), kv=torch.randn(2, 5, 4),
                grad_out=torch.randn(2, 3, 6))


# op -> (tensors by schema name, the other arguments by schema name)
CASES = {
    "fuzzy_loss": (_fuzzy, dict(alpha=0.5, logit_scale=1.0, threshold=0.5, smooth=1.0, reduction="mean",
                                logit="log")),
    "fuzzy_membership": (_fuzzy, {}),
    "fuzzy_backward": (lambda: {**_fuzzy(), "grad_loss": torch.tensor(1.0), "grad_mu": torch.randn(2, 3),
                                "stats": torch.rand(2, 4)},
                       dict(alpha=0.5, logit_scale=1.0, threshold=0.5, reduction="mean", logit="log")),
    "vq_nearest": (_vq, dict(deterministic=False)),
    "vq_quantize": (_vq, dict(beta=0.25, deterministic=False)),
    "vq_residual_backward": (_vq, dict(deterministic=False)),
    "gcn_spmm": (_gcn, dict(add_self_loops=True, normalize=True)),
    "gcn_spmm_value_grad": (_gcn, dict(add_self_loops=True, normalize=True)),
    "sigmoid_attention": (_attention, dict(scale=0.5, bias=0.0)),
    "sigmoid_attention_backward": (_attention, dict(scale=0.5, bias=0.0)),
    "sigmoid_attention_kv": (_attention, dict(scale=0.5, bias=0.0, residual=False)),
    "sigmoid_attention_kv_backward": (lambda: {**_attention(), "grad_out": torch.randn(2, 3, 4)},
                                      dict(scale=0.5, bias=0.0)),
}


def _overload(op: str):
    return getattr(torch.ops.fact_fast, op).default


def _tensor_names(op: str) -> list[str]:
    return [a.name for a in _overload(op)._schema.arguments if "Tensor" in str(a.type)]


def _arguments(op: str, device: str, moved: str | None = None, moved_to: str | None = None) -> list:
    """The op's arguments in schema order, every tensor on `device` except `moved` (on `moved_to`)."""
    make_tensors, others = CASES[op]
    tensors = make_tensors()
    args = []
    for a in _overload(op)._schema.arguments:
        if a.name in tensors:
            args.append(tensors[a.name].to(moved_to if a.name == moved else device))
        else:
            args.append(others[a.name])
    return args


def _call(op: str, key: str, args: list):
    keyset = torch._C.DispatchKeySet(getattr(torch._C.DispatchKey, key))
    return _overload(op).redispatch(keyset, *args)


def _names_device_mismatch(name: str) -> str:
    # "<name> must be on the device of <ref> (...)" or, when <name> is the reference, "... of <name> (".
    return rf"(\b{re.escape(name)} must be on the device of)|(must be on the device of {re.escape(name)} \()"


CPU_CASES = [(op, name) for op in CASES for name in _tensor_names(op)]


def _has_cuda_kernel(op: str) -> bool:
    return _extension.has_kernel(op, "cuda")


def test_every_compiled_op_is_covered():
    ops = {op for op, _ in _extension._state["kernels"]}
    assert ops == set(CASES), f"compiled ops without a check case: {sorted(ops - set(CASES))}"


@pytest.mark.parametrize("op,name", CPU_CASES, ids=[f"{op}-{name}" for op, name in CPU_CASES])
def test_cpu_kernel_names_a_tensor_on_another_device(op, name):
    with pytest.raises(ValueError, match=_names_device_mismatch(name)):
        _call(op, "CPU", _arguments(op, "cpu", moved=name, moved_to="meta"))


@pytest.mark.parametrize("op,name", CPU_CASES, ids=[f"{op}-{name}" for op, name in CPU_CASES])
def test_cuda_kernel_names_a_tensor_on_another_device(op, name):
    # Runs without a GPU: everything on meta but one CPU tensor; the check fires before any CUDA call.
    if not _has_cuda_kernel(op):
        pytest.skip("built without the CUDA kernels")
    with pytest.raises(ValueError, match=_names_device_mismatch(name)):
        _call(op, "CUDA", _arguments(op, "meta", moved=name, moved_to="cpu"))


@pytest.mark.parametrize("op", sorted(CASES))
def test_cuda_kernel_rejects_tensors_that_are_not_cuda(op):
    if not _has_cuda_kernel(op):
        pytest.skip("built without the CUDA kernels")
    with pytest.raises(ValueError, match="must be a CUDA tensor, got one on meta"):
        _call(op, "CUDA", _arguments(op, "meta"))


@pytest.mark.parametrize("key", ["CPU", "CUDA"])
def test_fuzzy_backward_checks_shapes_and_dtypes_of_its_optional_tensors(key):
    if key == "CUDA" and not _has_cuda_kernel("fuzzy_backward"):
        pytest.skip("built without the CUDA kernels")
    device = "cpu" if key == "CPU" else "meta"  # meta: the CUDA checks run, nothing is launched

    def call(**changes):
        args = _arguments("fuzzy_backward", device)
        names = [a.name for a in _overload("fuzzy_backward")._schema.arguments]
        for name, value in changes.items():
            args[names.index(name)] = value if value is None else value.to(device)
        return _call("fuzzy_backward", key, args)

    with pytest.raises(ValueError, match=r"stats must have shape \[B, 4\]"):
        call(stats=torch.rand(2, 3))
    with pytest.raises(ValueError, match=r"grad_mu must have shape \[B, C\]"):
        call(grad_mu=torch.randn(3, 2))
    with pytest.raises(TypeError, match="grad_mu must be a floating tensor"):
        call(grad_mu=torch.ones(2, 3, dtype=torch.int64))
    with pytest.raises(TypeError, match="stats must be a floating tensor"):
        call(stats=torch.ones(2, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="grad_loss needs y and stats"):
        call(stats=None)
    with pytest.raises(ValueError, match="grad_loss needs y and stats"):
        call(y=None)


@pytest.mark.parametrize("key", ["CPU", "CUDA"])
@pytest.mark.parametrize("op", ["fuzzy_loss", "fuzzy_backward"])
def test_fuzzy_ops_check_the_logit_and_its_threshold(op, key):
    if key == "CUDA" and not _has_cuda_kernel(op):
        pytest.skip("built without the CUDA kernels")
    device = "cpu" if key == "CPU" else "meta"  # meta: the CUDA checks run, nothing is launched
    names = [a.name for a in _overload(op)._schema.arguments]

    def call(**changes):
        args = _arguments(op, device)
        for name, value in changes.items():
            args[names.index(name)] = value
        return _call(op, key, args)

    with pytest.raises(ValueError, match="logit must be 'scaled' or 'log', got linear"):
        call(logit="linear")
    for threshold in (0.0, -0.5):  # log(μ/δ) needs δ > 0
        with pytest.raises(ValueError, match="threshold must be > 0 for logit='log'"):
            call(threshold=threshold)
    if key == "CPU":  # the scaled logit takes any threshold
        call(logit="scaled", threshold=0.0)


def test_vq_residual_backward_checks_its_weights():
    args = _arguments("vq_residual_backward", "cpu")
    names = [a.name for a in _overload("vq_residual_backward")._schema.arguments]
    args[names.index("z_weight")] = torch.ones(5, dtype=torch.int64)
    with pytest.raises(TypeError, match="z_weight must be a floating tensor"):
        _call("vq_residual_backward", "CPU", args)


# --- with a GPU: real CUDA tensors ------------------------------------------------------------------

@pytest.mark.cuda
@pytest.mark.parametrize("op,name", CPU_CASES, ids=[f"{op}-{name}" for op, name in CPU_CASES])
def test_cuda_op_names_a_cpu_tensor(op, name):
    # Through the normal dispatcher: any CUDA argument selects the CUDA registration.
    with pytest.raises(ValueError, match=_names_device_mismatch(name)):
        _overload(op)(*_arguments(op, "cuda", moved=name, moved_to="cpu"))
    torch.cuda.synchronize()  # the context is still usable: nothing foreign was launched


@pytest.mark.cuda
@pytest.mark.parametrize("op,name", CPU_CASES, ids=[f"{op}-{name}" for op, name in CPU_CASES])
def test_cuda_op_names_a_tensor_on_another_gpu(op, name):
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    with pytest.raises(ValueError, match=_names_device_mismatch(name)):
        _overload(op)(*_arguments(op, "cuda:0", moved=name, moved_to="cuda:1"))
    torch.cuda.synchronize()
