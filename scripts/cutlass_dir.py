"""Print the CUTLASS include directory the build uses (the one holding cute/ and cutlass/).

Looked up in this order:
1. ``CUTLASS_DIR``: a CUTLASS checkout or release (``$CUTLASS_DIR/include/cute``) or an include
   directory itself (``$CUTLASS_DIR/cute``). Set but not either of those: an error.
2. A copy staged in the checkout, ``third_party/cutlass/include`` (ignored by git), for machines
   without network such as the GPU machine: ``python scripts/cutlass_dir.py --stage`` makes it
   from the headers found otherwise (about 27 MB); carry ``third_party/cutlass`` there.
3. The ``nvidia-cutlass`` wheel (requirements/cuda-build.txt), whose headers are in
   ``cutlass_library/source/include``; located without importing it.
Exits 1 with a message when none is there. setup.py calls :func:`find_include` (without headers the
CuTe kernels are left out, and the build says so).
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import sys

PROBE = os.path.join("cute", "tensor.hpp")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGED = os.path.join(ROOT, "third_party", "cutlass", "include")


def _wheel_include() -> str | None:
    spec = importlib.util.find_spec("cutlass_library")
    for location in (spec.submodule_search_locations or []) if spec else []:
        include = os.path.join(location, "source", "include")
        if os.path.isfile(os.path.join(include, PROBE)):
            return include
    return None


def find_include() -> str | None:
    """The include directory, or None when no CUTLASS headers are found; ValueError for a bad CUTLASS_DIR."""
    root = os.environ.get("CUTLASS_DIR")
    if root:
        for include in (os.path.join(root, "include"), root):
            if os.path.isfile(os.path.join(include, PROBE)):
                return os.path.abspath(include)
        raise ValueError(f"CUTLASS_DIR={root!r} holds neither include/{PROBE} nor {PROBE}")
    if os.path.isfile(os.path.join(STAGED, PROBE)):
        return STAGED
    return _wheel_include()


def main(argv: list[str]) -> int:
    try:
        include = find_include()
    except ValueError as err:
        print(err, file=sys.stderr)
        return 1
    if include is None:
        print("no CUTLASS headers: set CUTLASS_DIR or pip install -r requirements/cuda-build.txt", file=sys.stderr)
        return 1
    if argv == ["--stage"]:
        if include != STAGED:
            for part in ("cute", "cutlass"):
                shutil.copytree(os.path.join(include, part), os.path.join(STAGED, part), dirs_exist_ok=True)
        include = STAGED
    elif argv:
        print("usage: python scripts/cutlass_dir.py [--stage]", file=sys.stderr)
        return 2
    print(include)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
