"""Print the CUTLASS include directory the build uses (the one holding cute/ and cutlass/).

Looked up in this order:
1. ``CUTLASS_DIR``: a CUTLASS checkout or release (``$CUTLASS_DIR/include/cute``) or an include
   directory itself (``$CUTLASS_DIR/cute``). Set but not either of those: an error.
2. The ``nvidia-cutlass`` wheel (requirements/cuda-build.txt), whose headers are in
   ``cutlass_library/source/include``; located without importing it.
Exits 1 with a message when neither is there. setup.py calls :func:`find_include` (then the CUTLASS
kernels are left out, and it says so); on a machine without network, copy the printed directory
(about 27 MB) next to the checkout and point ``CUTLASS_DIR`` at the copy.
"""
from __future__ import annotations

import importlib.util
import os
import sys

PROBE = os.path.join("cute", "tensor.hpp")


def find_include() -> str | None:
    """The include directory, or None when no CUTLASS headers are found; ValueError for a bad CUTLASS_DIR."""
    root = os.environ.get("CUTLASS_DIR")
    if root:
        for include in (os.path.join(root, "include"), root):
            if os.path.isfile(os.path.join(include, PROBE)):
                return os.path.abspath(include)
        raise ValueError(f"CUTLASS_DIR={root!r} holds neither include/{PROBE} nor {PROBE}")
    spec = importlib.util.find_spec("cutlass_library")
    for location in (spec.submodule_search_locations or []) if spec else []:
        include = os.path.join(location, "source", "include")
        if os.path.isfile(os.path.join(include, PROBE)):
            return include
    return None


def main() -> int:
    try:
        include = find_include()
    except ValueError as err:
        print(err, file=sys.stderr)
        return 1
    if include is None:
        print("no CUTLASS headers: set CUTLASS_DIR or pip install -r requirements/cuda-build.txt", file=sys.stderr)
        return 1
    print(include)
    return 0


if __name__ == "__main__":
    sys.exit(main())
