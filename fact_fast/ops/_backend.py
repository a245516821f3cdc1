"""Backend registry and selection for the ops front-end.

Every public op has a ``reference`` implementation (plain PyTorch, autograd does the backward)
and may have fused implementations registered under ``cpu`` / ``cuda`` (the compiled extension)
and ``triton``. A kernel family adds a backend by calling :func:`register` from its own module;
nothing here needs to change.

Selection, highest precedence first:

1. the op's ``backend=`` keyword,
2. the innermost :func:`use_backend` context,
3. the ``FACT_FAST_BACKEND`` environment variable,
4. ``"auto"``: the first backend of the op's auto order for the inputs' device that can run them.

A backend that is named explicitly but cannot run the inputs raises
:class:`BackendUnavailableError` with the reason; ``auto`` never raises for a missing backend
because ``reference`` runs everything.
"""
from __future__ import annotations

import contextlib
import functools
import os
import threading
from dataclasses import dataclass
from collections.abc import Callable, Iterator

import torch

BACKENDS = ("reference", "cpu", "cuda", "triton")
CHOICES = ("auto",) + BACKENDS
ENV_VAR = "FACT_FAST_BACKEND"

# GPU: Triton first for every family. Its autotuned, pipelined tl.dot tiles (tensor cores for
# fp16/bf16, 3xTF32 for fp32) are expected to beat the CUDA extension's simpler kernels, but this is
# UNMEASURED: no benchmark has run on a GPU yet (scripts/gpu_check.sh produces the numbers). Where
# a benchmark says otherwise, override one family with set_auto_order(op, "cuda", ...).
# CPU: Triton is never picked automatically for CPU tensors: there it only runs in the interpreter.
DEFAULT_AUTO_ORDER = {
    "cuda": ("triton", "cuda", "reference"),
    "cpu": ("cpu", "reference"),
}


class BackendUnavailableError(RuntimeError):
    """A backend was requested explicitly but cannot run these inputs."""


Supports = Callable[..., "str | None"]


@dataclass(frozen=True)
class Impl:
    fn: Callable
    supports: Supports  # same arguments as fn; returns None if it can run them, else the reason


_registry: dict[str, dict[str, Impl]] = {}
_auto_order: dict[str, dict[str, tuple[str, ...]]] = {}
_local = threading.local()


def _always(*args, **kwargs) -> None:
    return None


def _autocast_off(fn: Callable) -> Callable:
    """``fn`` with autocast disabled on its tensors' device.

    The front-ends check that an op's floating inputs share one dtype and each kernel picks its
    own accumulation precision, so a fused op runs on the dtype it is given. Left on, autocast
    would re-cast the ATen calls inside the compiled kernels (their float32 accumulators against
    bfloat16 operands: "mat1 and mat2 must have the same dtype"). The reference backend stays
    under autocast like any PyTorch code.
    """
    @functools.wraps(fn)
    def run(*args, **kwargs):
        device = next((a.device.type for a in args if isinstance(a, torch.Tensor)), "cpu")
        with torch.autocast(device, enabled=False):
            return fn(*args, **kwargs)
    return run


def register(op: str, backend: str, supports: Supports | None = None) -> Callable[[Callable], Callable]:
    """Decorator registering ``fn`` as ``backend``'s implementation of ``op`` (fused backends run
    with autocast off, see :func:`_autocast_off`)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")

    def deco(fn: Callable) -> Callable:
        _registry.setdefault(op, {})[backend] = Impl(fn if backend == "reference" else _autocast_off(fn),
                                                     supports or _always)
        return fn

    return deco


def set_auto_order(op: str, device_type: str, order: tuple[str, ...]) -> None:
    """Override which backends ``auto`` tries, in order, for ``op`` on ``device_type``."""
    unknown = [b for b in order if b not in BACKENDS]
    if unknown:
        raise ValueError(f"order contains unknown backends {unknown}; valid: {BACKENDS}")
    _auto_order.setdefault(op, {})[device_type] = tuple(order)


def _check_choice(name: str, where: str) -> str:
    if not isinstance(name, str) or name not in CHOICES:
        raise ValueError(f"{where} must be one of {CHOICES}, got {name!r}")
    return name


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Force every op called inside the block to use backend ``name`` (or ``"auto"``)."""
    _check_choice(name, "use_backend(name)")
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    stack.append(name)
    try:
        yield
    finally:
        stack.pop()


def requested_backend(backend: str | None = None) -> str:
    """The backend name in force for a call: argument, then context, then env var, then auto."""
    if backend is not None:
        return _check_choice(backend, "backend")
    stack = getattr(_local, "stack", None)
    if stack:
        return stack[-1]
    env = os.environ.get(ENV_VAR)
    if env:
        return _check_choice(env, f"the {ENV_VAR} environment variable")
    return "auto"


def auto_order(op: str, device_type: str) -> tuple[str, ...]:
    return _auto_order.get(op, {}).get(device_type, DEFAULT_AUTO_ORDER.get(device_type, ("reference",)))


def resolve(op: str, backend: str | None, device: torch.device, *args, **kwargs) -> tuple[str, Callable]:
    """Pick the implementation of ``op`` for these arguments; returns ``(backend_name, fn)``."""
    impls = _registry.get(op)
    if not impls:
        raise KeyError(f"no implementation registered for op {op!r}")
    name = requested_backend(backend)
    if name != "auto":
        impl = impls.get(name)
        if impl is None:
            raise BackendUnavailableError(
                f"{op}: backend {name!r} is not implemented; available: {sorted(impls)}")
        reason = impl.supports(*args, **kwargs)
        if reason is not None:
            raise BackendUnavailableError(f"{op}: backend {name!r} cannot run these inputs: {reason}")
        return name, impl.fn
    for candidate in auto_order(op, device.type):
        impl = impls.get(candidate)
        if impl is not None and impl.supports(*args, **kwargs) is None:
            return candidate, impl.fn
    return "reference", impls["reference"].fn


def available_backends(op: str, *args, **kwargs) -> list[str]:
    """Backends of ``op`` that can run the given example arguments (all registered if none given)."""
    impls = _registry.get(op, {})
    if not args and not kwargs:
        return [b for b in BACKENDS if b in impls]
    return [b for b in BACKENDS if b in impls and impls[b].supports(*args, **kwargs) is None]


def registered_ops() -> list[str]:
    return sorted(_registry)
