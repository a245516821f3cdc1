"""fact_fast: FACT for multi-label medical image diagnosis, with fused kernels for its four ops."""
import importlib.util as _importlib_util
import os as _os
import sys as _sys

__version__ = "0.1.0"


def _attach_source_kernels() -> None:
    """Make ``fact_fast.kernels`` the checkout's top-level ``kernels/`` when running from a source tree.

    The Triton kernels live beside ``csrc/`` in ``<repo>/kernels``; wheels and editable installs map
    that directory to ``fact_fast.kernels`` (setup.py's ``package_dir``). Imported straight from a
    checkout (``PYTHONPATH=<repo>``) no installer mapping exists, so the package is registered here
    from its file. An installed ``fact_fast/kernels`` always wins, and only the sibling of this
    package's own directory is considered, never whatever ``kernels`` package is importable.
    """
    here = _os.path.dirname(_os.path.abspath(__file__))
    if _os.path.isfile(_os.path.join(here, "kernels", "__init__.py")):
        return
    source = _os.path.join(_os.path.dirname(here), "kernels")
    init = _os.path.join(source, "__init__.py")
    if not _os.path.isfile(init):
        return
    spec = _importlib_util.spec_from_file_location(f"{__name__}.kernels", init, submodule_search_locations=[source])
    module = _importlib_util.module_from_spec(spec)
    _sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    globals()["kernels"] = module


_attach_source_kernels()
