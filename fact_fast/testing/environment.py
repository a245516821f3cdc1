"""What this machine has for the op checks: versions, the device, the compiled extension and the
GPU code inside it, the backends each op can use."""
from __future__ import annotations

import os
import platform
import struct

import torch

from fact_fast import __version__, _extension, ops

from .cases import example_inputs
from .matrix import OPS

__all__ = ["environment", "fatbin_archs"]


_FATBIN_MAGIC = struct.pack("<I", 0xBA55ED50)


def fatbin_archs(path: str) -> dict[str, list[str]]:
    """GPU code embedded in a shared library: ``{"sass": ["sm_80", ...], "ptx": [...]}``.

    Reads the CUDA fat binaries inside the file (header magic 0xBA55ED50; each entry is machine
    code (kind 2) or PTX (kind 1) with its SM version), as ``cuobjdump --list-elf --list-ptx`` lists them.
    """
    with open(path, "rb") as f:
        data = f.read()
    found: dict[str, set[str]] = {"sass": set(), "ptx": set()}
    pos = data.find(_FATBIN_MAGIC)
    while pos >= 0:
        version, header_size = struct.unpack_from("<HH", data, pos + 4)
        (size,) = struct.unpack_from("<Q", data, pos + 8)
        if version == 1 and header_size == 16 and pos + 16 + size <= len(data):
            entry, end = pos + header_size, pos + header_size + size
            while entry + 32 <= end:
                kind, _, entry_header, payload = struct.unpack_from("<HHII", data, entry)
                (sm,) = struct.unpack_from("<I", data, entry + 28)
                if entry_header == 0 or kind not in (1, 2):
                    break
                found["ptx" if kind == 1 else "sass"].add(f"sm_{sm}")
                entry += entry_header + payload
        pos = data.find(_FATBIN_MAGIC, pos + 4)
    return {kind: sorted(archs, key=lambda a: int(a[3:])) for kind, archs in found.items()}


def environment(device: torch.device) -> dict:
    """Versions (fact_fast, Python, torch, Triton and whether it is interpreted), the device (a
    GPU's name, compute capability, SMs, memory), the compiled extension (loaded, with CUDA, its
    file and GPU architectures) and, per op, the backends that can run fp32 inputs on ``device``."""
    env = {"fact_fast": __version__, "python": platform.python_version(), "platform": platform.platform(),
           "torch": torch.__version__, "torch_cuda": torch.version.cuda, "device": str(device),
           "triton": None, "triton_interpret": os.environ.get("TRITON_INTERPRET") == "1"}
    try:
        import triton
        env["triton"] = triton.__version__
    except ImportError:
        pass
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, capability=f"{props.major}.{props.minor}", sms=props.multi_processor_count,
                   gpu_memory_gib=round(props.total_memory / 2**30, 1), torch_archs=torch.cuda.get_arch_list())
    env["extension_loaded"] = bool(_extension.load())
    env["extension_with_cuda"] = _extension.built_with_cuda()
    if env["extension_loaded"]:
        from fact_fast import _C
        env["extension_file"] = _C.__file__
        env["extension_archs"] = fatbin_archs(_C.__file__) if _extension.built_with_cuda() else {"sass": [], "ptx": []}
    env["backends"] = {op: ops.available_backends(op, *example_inputs(op, device)) for op in OPS}
    return env
