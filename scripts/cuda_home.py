"""Print a CUDA_HOME made from the pip-installed CUDA compiler matching torch.version.cuda.

The index's `nvidia-cuda-nvcc` / `nvidia-cuda-crt` / `nvidia-nvvm` wheels install a toolkit under
site-packages/nvidia/cu<major>; torch's cpp_extension needs `lib/libcudart.so`, which the wheel
ships only as `libcudart.so.<major>`, so the link is created here. Exits 1 with a message when the
compiler is missing or does not match torch's CUDA version.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

import torch


def main() -> int:
    if torch.version.cuda is None:
        print("torch is a CPU-only build; the CUDA extension cannot be built against it", file=sys.stderr)
        return 1
    major = torch.version.cuda.split(".")[0]
    candidates = [os.path.join(p, "nvidia", f"cu{major}") for p in sys.path if p.endswith("site-packages")]
    home = next((c for c in candidates if os.path.exists(os.path.join(c, "bin", "nvcc"))), None)
    if home is None:
        print(f"no pip-installed nvcc for CUDA {major} (pip install -r requirements/cuda-build.txt)", file=sys.stderr)
        return 1
    out = subprocess.run([os.path.join(home, "bin", "nvcc"), "--version"], capture_output=True, text=True).stdout
    found = re.search(r"release (\d+\.\d+)", out)
    if not found or found.group(1) != ".".join(torch.version.cuda.split(".")[:2]):
        print(f"nvcc at {home} is CUDA {found and found.group(1)}, torch needs {torch.version.cuda}", file=sys.stderr)
        return 1
    lib = os.path.join(home, "lib")
    link = os.path.join(lib, "libcudart.so")
    if not os.path.exists(link):
        os.symlink(f"libcudart.so.{major}", link)
    print(home)
    return 0


if __name__ == "__main__":
    sys.exit(main())
