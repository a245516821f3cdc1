"""sigmoid_attention / sigmoid_interface cases (docs/design.md §4).

sigmoid_attention: FACT size B=32, Lq=40, Lk=196, d=512; large B·H=128, L=4096, d=128 (scaled on CPU).
sigmoid_interface: FACT's operator with the class queries shared by the batch, q [40, 512], v [32, 196, 512].
Baselines: torch.compile of the reference, and torch SDPA (softmax) at the same shapes, the speed
bar of the large case: 4-D [B, 1, L, d] inputs with the flash backend pinned
(``torch.nn.attention.sdpa_kernel``). Where flash cannot run these inputs (fp32 or d > 256 on a
GPU; some CPU builds) the baseline falls back to torch's own choice and its JSON entry says so
(``note``), so a number is never labelled flash when it is not.
"""
import warnings

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from benchmarks.harness import Case
from fact_fast import ops
from fact_fast.ops import reference

SIZES = {"fact": (32, 40, 196, 512), "large": (128, 4096, 4096, 128)}
INTERFACE = (32, 40, 196, 512)  # B, C, M, d


def _make(size):
    def make(device, dtype, scale):
        b, lq, lk, d = SIZES[size]
        if size == "large":
            b, lq, lk = max(1, int(b * scale)), max(1, int(lq * scale)), max(1, int(lk * scale))
        g = torch.Generator().manual_seed(0)
        return {"q": torch.randn(b, lq, d, generator=g).to(device, dtype),
                "k": torch.randn(b, lk, d, generator=g).to(device, dtype),
                "v": torch.randn(b, lk, d, generator=g).to(device, dtype)}
    return make


def _compiled_reference(q, k, v):
    fn = torch.compile(reference.sigmoid_attention)
    return lambda: fn(q, k, v)


def pinned_flash(run, device: torch.device):
    """``run`` (an SDPA call) under the flash backend, or under torch's default choice with a note
    saying why when flash cannot run it. Returns a zero-argument callable with a ``note``."""
    try:
        with warnings.catch_warnings(record=True) as caught, sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            warnings.simplefilter("always")
            run()
    except RuntimeError as err:
        why = "; ".join(str(w.message).strip() for w in caught if "flash" in str(w.message).lower())
        fallback = lambda: run()  # noqa: E731
        fallback.note = (f"flash unavailable on {device.type} for these inputs ({why or err}); "
                         "timed torch's default SDPA backend instead")
        return fallback

    def flash():
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return run()
    flash.note = ("flash backend pinned" + (" (PyTorch's CPU flash kernel)" if device.type == "cpu" else ""))
    return flash


def _sdpa(q, k, v):
    q4, k4, v4 = (t.unsqueeze(1) for t in (q, k, v))  # [B, H=1, L, d]
    return pinned_flash(lambda: F.scaled_dot_product_attention(q4, k4, v4), q.device)


CASES = [Case(op="sigmoid_attention", size=s, make=_make(s),
              run=lambda backend, q, k, v: ops.sigmoid_attention(q, k, v, backend=backend),
              baselines={"torch.compile(reference)": _compiled_reference, "torch_sdpa_flash": _sdpa},
              grad_inputs=("q", "k", "v"), cpu_scale=1.0 if s == "fact" else 1 / 16)
         for s in SIZES]


def _make_interface(device, dtype, scale):
    b, c, m, d = INTERFACE
    g = torch.Generator().manual_seed(0)
    return {"q": torch.randn(c, d, generator=g).to(device, dtype),
            "v": torch.randn(b, m, d, generator=g).to(device, dtype)}


def _compiled_interface(q, v):
    fn = torch.compile(reference.sigmoid_interface)
    return lambda: fn(q, v)


def _sdpa_interface(q, v):
    q4, v4 = q.expand(v.shape[0], 1, *q.shape), v.unsqueeze(1)  # [B, H=1, C, d], [B, 1, M, d]
    return pinned_flash(lambda: q + F.scaled_dot_product_attention(q4, v4, v4).squeeze(1), q.device)


CASES.append(Case(op="sigmoid_interface", size="fact", make=_make_interface,
                  run=lambda backend, q, v: ops.sigmoid_interface(q, v, backend=backend),
                  baselines={"torch.compile(reference)": _compiled_interface, "torch_sdpa_flash": _sdpa_interface},
                  grad_inputs=("q", "v")))
