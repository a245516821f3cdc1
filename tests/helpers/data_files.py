"""Helpers for the data tests: stand-in image files and the real label tables.

The real NIH ChestX-ray14 and CheXpert tables ship in the torchxrayvision wheel
(``torchxrayvision==1.5.7`` in requirements/dev.txt); they are read from the installed
distribution's files, without importing torchxrayvision.
"""
import gzip
import os
import shutil
from importlib import metadata

import numpy as np
import pytest

TXRV = "torchxrayvision"
TXRV_VERSION = "1.5.7"


def write_image(path, value, size=(10, 12), mode="L", fmt=None):
    """A constant image of ``value`` (int, or an RGB triple) at ``path`` (parents created)."""
    from PIL import Image

    w, h = size
    if mode == "RGB":
        arr = np.empty((h, w, 3), np.uint8)
        arr[...] = value
    else:
        arr = np.full((h, w), value, dtype=np.uint8)
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    Image.fromarray(arr).save(str(path), format=fmt, **({"quality": 100} if fmt == "JPEG" else {}))
    return str(path)


def real_table(name: str, dest) -> str:
    """Decompress ``torchxrayvision/data/<name>.gz`` of the installed wheel to ``dest``.

    Fails (never skips) under CI or ``make test`` (FACT_FAST_REQUIRE_EXTENSION=1), where the dev
    requirements are installed; skips elsewhere (e.g. a GPU box without the dev requirements).
    """
    try:
        dist = metadata.distribution(TXRV)
    except metadata.PackageNotFoundError:
        why = (f"{TXRV}=={TXRV_VERSION} (requirements/dev.txt) ships the real NIH and CheXpert label "
               "tables these tests read; pip install -r requirements/dev.txt")
        if os.environ.get("CI") or os.environ.get("FACT_FAST_REQUIRE_EXTENSION") == "1":
            pytest.fail(why)
        pytest.skip(why)
    assert dist.version == TXRV_VERSION, f"the expected counts are those of {TXRV} {TXRV_VERSION}'s tables"
    src = dist.locate_file(f"{TXRV}/data/{name}.gz")
    assert os.path.isfile(src), f"{src} missing from the installed {TXRV}"
    os.makedirs(os.path.dirname(str(dest)), exist_ok=True)
    with gzip.open(src, "rb") as f, open(dest, "wb") as out:
        shutil.copyfileobj(f, out)
    return str(dest)
