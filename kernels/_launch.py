"""What every Triton launcher of fact_fast shares: one ``launch`` that runs a kernel on its tensors'
device with explicit compile options and, on a GPU, an autotuned choice among configurations.

Floating-point fusion. Triton contracts ``a * b + c`` into one FMA unless told otherwise, and its
default is moving: Triton 3.9 fuses by default but warns that 3.10 will not, and
``TRITON_DEFAULT_FP_FUSION`` / ``TRITON_FORCE_DISABLE_FP_FUSION`` change it process-wide. The kernels
here are written for fused arithmetic (one rounding in ‖p‖² − 2⟨z,p⟩, in the sigmoid's
``s·a + c`` argument, in the online log-sum-exp), so every launch passes ``enable_fp_fusion=True``:
the compiled code is the same on Triton 3.6 through 3.10 whatever the version's default.
(``TRITON_FORCE_DISABLE_FP_FUSION=1`` still wins, on purpose: it is a debugging switch.)

Device. Triton launches on the *current* CUDA device and stream; a tensor on ``cuda:1`` while
``cuda:0`` is current would be read through foreign addresses. ``launch`` makes the first tensor
argument's device current for the launch (and for the autotuner's benchmark runs).
"""
from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Sequence

import torch
import triton

FP_FUSION = True

# A launch configuration: (constexpr block sizes, num_warps, num_stages).
Config = tuple[dict, int, int]


def interpreting() -> bool:
    """True under ``TRITON_INTERPRET=1``: kernels run on CPU tensors through Triton's interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def check_interpreter(kernel) -> None:
    """Raise a clear error when ``TRITON_INTERPRET=1`` came too late for ``kernel`` to be interpreted.

    ``triton.jit`` makes each function compiled or interpreted when its module is imported, and
    ``triton.language`` is imported early and indirectly (``torch._dynamo`` imports it). Set after
    that, the variable yields kernels whose calls to Triton's own library functions fail deep in
    the interpreter with "Cannot call @triton.jit'd outside of the scope of a kernel".
    """
    from triton.language import standard
    from triton.runtime.interpreter import InterpretedFunction
    library = getattr(standard, "cdiv", None)
    if not isinstance(kernel, InterpretedFunction) or (library is not None
                                                        and not isinstance(library, InterpretedFunction)):
        raise RuntimeError(
            "TRITON_INTERPRET=1 was set after triton was imported, so Triton's functions were compiled, not "
            "interpreted, and the kernels cannot run on CPU tensors. Set it before Python starts "
            "(export TRITON_INTERPRET=1) or before importing fact_fast.ops or torch._dynamo.")


def device_guard(device: torch.device) -> contextlib.AbstractContextManager:
    """Make ``device`` current while a kernel is launched (nothing to do for CPU tensors)."""
    if device.type == "cuda":
        return torch.cuda.device(device)
    return contextlib.nullcontext()


@functools.cache
def _autotuner(kernel, configs: tuple, key: tuple[str, ...]):
    return triton.autotune(configs=[triton.Config(dict(kw), num_warps=w, num_stages=s) for kw, w, s in configs],
                           key=list(key))(kernel)


def launch(kernel, grid: tuple | Callable[[dict], tuple], *args, configs: Sequence[Config],
           key: Sequence[str] = (), **constexprs) -> None:
    """Run ``kernel[grid](*args, **constexprs)`` on the device of the first tensor in ``args``.

    ``configs`` lists the candidate configurations. On a GPU with more than one the autotuner
    times them once per distinct value of the ``key`` arguments (and argument dtypes); the
    interpreter, where autotuning does not work, runs the first. ``grid`` is a tuple or, when
    it depends on the chosen block sizes, a function of them.
    """
    device = next(a.device for a in args if isinstance(a, torch.Tensor))
    if interpreting():
        check_interpreter(kernel)
    with device_guard(device):
        if len(configs) == 1 or interpreting():
            block, warps, stages = configs[0]
            shape = grid(block) if callable(grid) else grid
            kernel[shape](*args, **constexprs, **block, num_warps=warps, num_stages=stages,
                          enable_fp_fusion=FP_FUSION)
        else:
            frozen = tuple((tuple(sorted(block.items())), warps, stages) for block, warps, stages in configs)
            _autotuner(kernel, frozen, tuple(key))[grid](*args, **constexprs, enable_fp_fusion=FP_FUSION)


@functools.cache
def _multiprocessors(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def multiprocessors(device: torch.device) -> int:
    """Streaming multiprocessors of ``device``; a nominal 4 for the interpreter (CPU tensors), so
    that small test inputs take the same multi-program paths a GPU takes at full size."""
    if device.type != "cuda":
        return 4
    return _multiprocessors(device.index if device.index is not None else torch.cuda.current_device())
