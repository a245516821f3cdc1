"""On-disk cache of decoded, resized uint8 images: one memory-mapped ``.npy`` per split and size.

``attach_cache(ds, cache_dir, size)`` decodes every image of a file-backed dataset once (in
``workers`` threads: Pillow and torch release the GIL while decoding and resizing), resizes it to
``size`` x ``size`` with the same antialiased resize as the eval pipeline, and stores the split as
``<cache_dir>/<name>-<split>-<channels>-<size>-<key>.npy`` (uint8 ``[N, S, S]`` gray or
``[N, S, S, 3]`` rgb) beside a JSON sidecar. ``key`` hashes what the pixels depend on: the
reader, its pixel options and the list of source files (``MultiLabelDataset.cache_key``); the
sidecar holds the full hash, which is checked on reuse (a mismatch or a damaged file rebuilds).
Later epochs and runs read the array through ``MultiLabelDataset.raw_image`` and decode no
PNG/JPEG/DICOM.

Files that fail to decode during the build are dropped from the split (labels, paths and ids
re-indexed together by ``keep_samples``) and listed in ``ds.skipped`` as ``(path, reason)``; the
sidecar remembers them so a reused cache drops the same samples without retrying them.

The build is atomic and safe under concurrency: the array and the sidecar are written to
temporary files and renamed into place (a crash never leaves a torn cache), under an exclusive
lock on ``<file>.lock`` so that DDP ranks sharing a cache directory build it once.

Images are stored square (aspect ratio not kept), at the pipeline's ``resize_to``: the eval
transform (resize to ``resize_to``, centre crop) is then exactly the transform of the uncached
image, and the train crops work from the cached size. Replacing image files in place under the
same names is not detected: delete the cache (or pass ``rebuild=True``).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .base import DECODE_ERRORS, MultiLabelDataset

__all__ = ["ImageCache", "attach_cache", "cache_file", "resize_square", "CACHE_FORMAT"]

CACHE_FORMAT = 1  # bump when the stored pixels change for the same key (resize method...)


def resize_square(raw: np.ndarray, size: int) -> np.ndarray:
    """uint8 ``[H, W]`` / ``[H, W, 3]`` -> uint8 ``[size, size]`` / ``[size, size, 3]``, with the
    eval pipeline's resize (torchvision, bilinear, antialiased), so cached pixels are exactly
    those the uncached eval transform computes."""
    import torch
    from torchvision.transforms.v2 import functional as F

    arr = np.asarray(raw)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
        raise ValueError(f"raw image must be uint8 [H, W] or [H, W, 3], got {arr.dtype} {list(arr.shape)}")
    t = torch.from_numpy(np.ascontiguousarray(arr))
    t = t.unsqueeze(0) if arr.ndim == 2 else t.permute(2, 0, 1)
    out = F.resize(t, [size, size], antialias=True)
    return out[0].numpy() if arr.ndim == 2 else out.permute(1, 2, 0).contiguous().numpy()


class ImageCache:
    """Read side of a cache file: ``cache[i]`` -> uint8 ``[S, S]`` or ``[S, S, 3]`` (a copy).

    Pickles without its pixels (DataLoader workers under spawn/forkserver re-open the memory map).
    """

    def __init__(self, path, size: int, channels: str, count: int):
        self.path, self.size, self.channels, self.count = str(path), int(size), channels, int(count)
        self._array = None

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        return self._array

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> np.ndarray:
        return np.array(self.array[i])  # copy: a writable array for torch.from_numpy

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_array"] = None
        return state

    def __repr__(self) -> str:
        return f"ImageCache({self.path!r}, n={self.count}, size={self.size}, channels={self.channels!r})"


def _key_digest(key: dict, size: int) -> str:
    """sha256 over the cache key, streaming the (possibly 100k-long) item list."""
    h = hashlib.sha256()
    meta = {k: v for k, v in key.items() if k != "items"}
    h.update(json.dumps({"format": CACHE_FORMAT, "size": int(size), **meta}, sort_keys=True).encode())
    for item in key["items"]:
        h.update(b"\0")
        h.update(str(item).encode())
    return h.hexdigest()


def _cache_path(ds: MultiLabelDataset, cache_dir, size: int, digest: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{ds.name}-{ds.split}")
    return Path(cache_dir) / f"{safe}-{ds.channels}-{int(size)}-{digest[:16]}.npy"


def cache_file(ds: MultiLabelDataset, cache_dir, size: int) -> Path | None:
    """The cache array path of ``ds`` at ``size`` (None when the dataset is not cacheable); its
    sidecar is the same path with ``.json``."""
    key = ds.cache_key()
    return None if key is None else _cache_path(ds, cache_dir, size, _key_digest(key, size))


def _shape(n: int, size: int, channels: str) -> tuple:
    return (n, size, size) if channels == "gray" else (n, size, size, 3)


def _read_sidecar(npy: Path, digest: str, n: int, size: int, channels: str):
    """The sidecar dict if ``npy`` is a complete cache for this key, else ``(None, why)``."""
    meta_path = npy.with_suffix(".json")
    if not npy.is_file() or not meta_path.is_file():
        return None, "no cache yet"
    try:
        meta = json.loads(meta_path.read_text())
        arr = np.load(npy, mmap_mode="r")
    except (OSError, ValueError) as exc:
        return None, f"unreadable cache ({type(exc).__name__}: {exc})"
    if meta.get("key_sha256") != digest or meta.get("format") != CACHE_FORMAT:
        return None, "key mismatch"
    if meta.get("num_items") != n:
        return None, f"{meta.get('num_items')} items cached, dataset has {n}"
    kept = n - len(meta.get("skipped", []))
    if arr.dtype != np.uint8 or tuple(arr.shape) != _shape(kept, size, channels):
        return None, f"array {arr.dtype} {list(arr.shape)} != uint8 {list(_shape(kept, size, channels))}"
    return meta, ""


@contextlib.contextmanager
def _exclusive(lock_path: Path):
    try:
        import fcntl
    except ImportError:  # no flock (Windows): builds may race, each still atomic
        yield
        return
    with open(lock_path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _bounded_map(fn, n: int, workers: int):
    """``(i, fn(i))`` for i in range(n), in order, with at most ~4 tasks per thread in flight."""
    if workers <= 1:
        for i in range(n):
            yield i, fn(i)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        window = 4 * workers
        futures = {i: pool.submit(fn, i) for i in range(min(window, n))}
        for i in range(n):
            result = futures.pop(i).result()
            nxt = i + window
            if nxt < n:
                futures[nxt] = pool.submit(fn, nxt)
            yield i, result


def _build(ds: MultiLabelDataset, key: dict, npy: Path, digest: str, size: int, workers: int,
           progress: bool) -> dict:
    from tqdm import tqdm

    n = len(ds)
    channels = ds.channels
    tmp = npy.with_name(f"{npy.stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}.npy")
    skipped = []

    def decode(i):
        try:
            return resize_square(ds.load_raw(i), size), None
        except DECODE_ERRORS as exc:  # FileNotFoundError is an OSError
            return None, f"{type(exc).__name__}: {exc}"

    t0 = time.time()
    try:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=_shape(n, size, channels))
        row = 0
        bar = tqdm(total=n, desc=f"caching {ds.name} {ds.split} at {size}px", unit="img", disable=not progress,
                   mininterval=1.0)
        with bar:
            for i, (img, why) in _bounded_map(decode, n, workers):
                if img is None:
                    skipped.append([i, ds.describe(i), why])
                else:
                    arr[row] = img  # rows are packed: skipped samples leave no gap
                    row += 1
                bar.update(1)
        arr.flush()
        del arr
        if row == 0:
            raise ValueError(f"{ds.name}: every one of the {n} images of split {ds.split!r} is unreadable, "
                             f"e.g. {skipped[0][1]} ({skipped[0][2]})")
        if skipped:  # shrink the file to the kept rows (copy through a second memmap)
            full = np.load(tmp, mmap_mode="r")
            tmp2 = tmp.with_name(tmp.stem + "-packed.npy")
            out = np.lib.format.open_memmap(tmp2, mode="w+", dtype=np.uint8, shape=_shape(row, size, channels))
            for a in range(0, row, 1024):
                out[a:a + 1024] = full[a:min(a + 1024, row)]
            out.flush()
            del out, full
            os.replace(tmp2, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, npy)
    finally:
        for leftover in (tmp, tmp.with_name(tmp.stem + "-packed.npy")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
    meta = {"format": CACHE_FORMAT, "key_sha256": digest, "name": ds.name, "split": ds.split,
            "reader": key.get("reader"), "channels": channels, "size": int(size), "num_items": n,
            "num_cached": row, "skipped": skipped, "build_seconds": round(time.time() - t0, 3),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    meta_tmp = npy.with_name(f"{npy.stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}.json")
    meta_tmp.write_text(json.dumps(meta, indent=1) + "\n")
    os.replace(meta_tmp, npy.with_suffix(".json"))
    return meta


def attach_cache(ds: MultiLabelDataset, cache_dir, size: int | None = None, *, workers: int = 0,
                 progress: bool = True, rebuild: bool = False) -> ImageCache | None:
    """Build (first time) or reuse the on-disk image cache of ``ds`` and attach it.

    Args:
        ds: a per-image dataset (attach before wrapping it in ``MultiViewDataset``).
        cache_dir: directory of the cache files (created if missing).
        size: stored side in pixels; default ``ds.pipeline.resize_to`` (what ``build_dataset``
            attached). Must not be smaller than the pipeline's resize size (the transforms would
            upsample cached pixels).
        workers: decoding threads for the build (0 or 1: decode in this thread).
        progress: show a tqdm bar while building.
        rebuild: rebuild even when a valid cache exists.

    Returns the attached :class:`ImageCache`, or ``None`` for a dataset held or generated in
    memory (``ds.cache_key()`` is None: synthetic, ChestMNIST), which is left unchanged.
    Unreadable files are dropped from ``ds`` and listed in ``ds.skipped``. Raises
    ``ValueError`` if every image of the split is unreadable, or if ``ds`` already has a cache.
    A cache file that exists but does not match (damaged, other key) is rebuilt with a warning.
    """
    if not isinstance(ds, MultiLabelDataset):
        raise TypeError(f"ds must be a MultiLabelDataset (attach the cache to the per-image dataset before "
                        f"wrapping it), got {type(ds).__name__}")
    if ds.__dict__.get("_image_cache") is not None:
        raise ValueError(f"{ds.name} {ds.split} already has an image cache attached")
    pipeline = getattr(ds, "pipeline", None)
    if size is None:
        if pipeline is None:
            raise ValueError("size: give the cached image size (the dataset has no pipeline to take it from)")
        size = pipeline.resize_to
    size = int(size)
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    if pipeline is not None and size < pipeline.resize_to:
        raise ValueError(f"size ({size}) is smaller than the pipeline's resize size ({pipeline.resize_to}): "
                         "the transforms would upsample cached images")
    if int(workers) < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    key = ds.cache_key()
    if key is None:
        return None
    n = len(ds)
    if n == 0:
        raise ValueError(f"{ds.name}: split {ds.split!r} is empty, nothing to cache")
    digest = _key_digest(key, size)
    npy = _cache_path(ds, cache_dir, size, digest)
    npy.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(npy.with_suffix(".lock")):
        meta, why = (None, "rebuild requested") if rebuild else _read_sidecar(npy, digest, n, size, ds.channels)
        if meta is None:
            if why not in ("no cache yet", "rebuild requested"):
                warnings.warn(f"rebuilding the image cache {npy}: {why}", RuntimeWarning, stacklevel=2)
            for stale in npy.parent.glob(f"{npy.stem}.tmp-*"):  # left by a killed build; we hold the lock
                with contextlib.suppress(FileNotFoundError):
                    stale.unlink()
            meta = _build(ds, key, npy, digest, size, int(workers), progress)
    if meta["skipped"]:
        dropped = {int(i) for i, _path, _why in meta["skipped"]}
        ds.keep_samples([i for i in range(n) if i not in dropped])
        ds.skipped.extend((path, why) for _i, path, why in meta["skipped"])
    cache = ImageCache(npy, size, ds.channels, meta["num_cached"])
    ds.__dict__["_image_cache"] = cache
    return cache
