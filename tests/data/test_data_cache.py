"""The on-disk image cache: build, reuse, validation, skips, atomicity, DataLoader workers."""
import json
import multiprocessing as mp
import os
import pickle

import numpy as np
import pytest
import torch

from fact_fast.data import ImageCache, attach_cache, build_dataset
from fact_fast.data.base import MultiViewDataset, collate
from fact_fast.data.cache import cache_file, resize_square


def _folder(root, n=6, rgb=False, corrupt=(), missing=()):
    """n images of different sizes and a labels.csv (A = i % 2, B = i % 3 == 0); some corrupt/missing."""
    rng = np.random.default_rng(0)
    lines = ["path,A,B"]
    for i in range(n):
        name = f"img{i}.png"
        h, w = 20 + 3 * i, 30 - 2 * i
        shape = (h, w, 3) if rgb else (h, w)
        if i in corrupt:
            (root / name).write_bytes(b"\x89PNG\r\n\x1a\nbroken")
        elif i not in missing:
            from PIL import Image

            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(root / name)
        lines.append(f"{name},{i % 2},{int(i % 3 == 0)}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")


def _csv(root, split="train", **kw):
    kw.setdefault("image_size", 16)
    return build_dataset("csv", split, root=str(root), val_fraction=0, test_fraction=0, train=False, **kw)


@pytest.mark.parametrize("rgb", [False, True])
def test_cache_matches_uncached_eval_pipeline(tmp_path, rgb):
    _folder(tmp_path, rgb=rgb)
    opts = {"channels": "rgb"} if rgb else {}
    plain = _csv(tmp_path, **opts)
    cached = _csv(tmp_path, **opts)
    cache = attach_cache(cached, tmp_path / "cache", progress=False)
    assert isinstance(cache, ImageCache) and cache.size == 16 and len(cache) == 6
    npy = cache_file(plain, tmp_path / "cache", 16)
    assert str(npy) == cache.path and npy.name.startswith(f"csv-train-{'rgb' if rgb else 'gray'}-16-")
    arr = np.load(npy)
    assert arr.dtype == np.uint8 and arr.shape == ((6, 16, 16, 3) if rgb else (6, 16, 16))
    meta = json.loads(npy.with_suffix(".json").read_text())
    assert meta["num_items"] == 6 and meta["skipped"] == [] and meta["size"] == 16
    for i in range(6):
        np.testing.assert_array_equal(cached.raw_image(i), resize_square(plain.load_raw(i), 16))
        x0, y0 = plain[i]
        x1, y1 = cached[i]
        assert torch.equal(x0, x1) and torch.equal(y0, y1)  # eval transform: bit-identical
    assert cached.raw_image(0).flags.writeable


def test_cache_size_follows_pipeline_resize(tmp_path):
    _folder(tmp_path)
    ds = _csv(tmp_path, image_size=16, pipeline={"resize": 20})
    cache = attach_cache(ds, tmp_path / "c", progress=False)
    assert cache.size == 20 and ds.raw_image(0).shape == (20, 20)
    plain = _csv(tmp_path, image_size=16, pipeline={"resize": 20})
    assert torch.equal(ds[3][0], plain[3][0])  # resize 20 + centre crop 16, cached or not
    with pytest.raises(ValueError, match=r"size \(12\) is smaller than the pipeline's resize size \(20\)"):
        attach_cache(_csv(tmp_path, image_size=16, pipeline={"resize": 20}), tmp_path / "c", 12)
    bigger = attach_cache(_csv(tmp_path, image_size=16), tmp_path / "c", 24, progress=False)
    assert bigger.size == 24 and bigger.path != cache.path


def test_cache_reused_without_decoding(tmp_path, monkeypatch):
    _folder(tmp_path)
    first = _csv(tmp_path)
    attach_cache(first, tmp_path / "c", progress=False)
    npy = cache_file(first, tmp_path / "c", 16)
    stamp = npy.stat().st_mtime_ns
    from fact_fast.data.readers import CSVImageDataset

    def no_decoding(self, i):
        raise AssertionError("decoded an image although the cache is valid")

    monkeypatch.setattr(CSVImageDataset, "load_raw", no_decoding)
    again = _csv(tmp_path)
    attach_cache(again, tmp_path / "c", progress=False)
    assert npy.stat().st_mtime_ns == stamp
    for i in range(len(again)):
        assert torch.equal(again[i][0], first[i][0])
    with pytest.raises(ValueError, match="already has an image cache"):
        attach_cache(again, tmp_path / "c", progress=False)


def test_cache_key_changes_with_files_and_options(tmp_path):
    _folder(tmp_path)
    base = cache_file(_csv(tmp_path), tmp_path / "c", 16)
    assert cache_file(_csv(tmp_path), tmp_path / "c", 16) == base  # deterministic
    assert cache_file(_csv(tmp_path, intensity="percentile"), tmp_path / "c", 16) != base
    assert cache_file(_csv(tmp_path, channels="rgb"), tmp_path / "c", 16) != base
    assert cache_file(_csv(tmp_path), tmp_path / "c", 32) != base
    (tmp_path / "labels.csv").write_text((tmp_path / "labels.csv").read_text().replace("img5.png", "img4.png"))
    assert cache_file(_csv(tmp_path), tmp_path / "c", 16) != base  # another file list
    with open(tmp_path / "labels.csv", "a") as f:
        f.write("img0.png,1,1\n")
    assert cache_file(_csv(tmp_path), tmp_path / "c", 16) != base


def test_damaged_cache_is_rebuilt(tmp_path):
    _folder(tmp_path)
    ds = _csv(tmp_path)
    attach_cache(ds, tmp_path / "c", progress=False)
    good = np.load(ds.__dict__["_image_cache"].path)
    npy = cache_file(ds, tmp_path / "c", 16)
    meta_path = npy.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps(dict(meta, key_sha256="0" * 64)))
    with pytest.warns(RuntimeWarning, match="rebuilding the image cache .*key mismatch"):
        attach_cache(_csv(tmp_path), tmp_path / "c", progress=False)
    assert json.loads(meta_path.read_text())["key_sha256"] == meta["key_sha256"]
    npy.write_bytes(npy.read_bytes()[:200])  # truncated array
    with pytest.warns(RuntimeWarning, match="rebuilding the image cache"):
        ds2 = _csv(tmp_path)
        attach_cache(ds2, tmp_path / "c", progress=False)
    np.testing.assert_array_equal(np.load(npy), good)
    meta_path.unlink()  # array without sidecar (a crash between the two renames): rebuilt silently
    attach_cache(_csv(tmp_path), tmp_path / "c", progress=False)
    assert meta_path.is_file()


def test_unreadable_files_are_listed_and_dropped(tmp_path, monkeypatch):
    _folder(tmp_path, n=8, corrupt=(2,), missing=(5,))
    plain = _csv(tmp_path)
    ds = _csv(tmp_path)
    attach_cache(ds, tmp_path / "c", progress=False, workers=3)
    assert len(ds) == 6 and len(ds.paths) == 6 and ds.labels.shape == (6, 2)
    kept = [0, 1, 3, 4, 6, 7]
    assert ds.paths == [plain.paths[k] for k in kept]
    np.testing.assert_array_equal(ds.labels, plain.labels[kept])
    for j, k in enumerate(kept):
        assert torch.equal(ds[j][0], plain[k][0]) and torch.equal(ds[j][1], plain[k][1])
    assert [p for p, _ in ds.skipped] == [plain.paths[2], plain.paths[5]]
    assert "UnidentifiedImageError" in ds.skipped[0][1] and "FileNotFoundError" in ds.skipped[1][1]
    assert np.load(ds.__dict__["_image_cache"].path).shape == (6, 16, 16)
    # reuse: the same samples are dropped without trying to decode them again
    from fact_fast.data.readers import CSVImageDataset

    monkeypatch.setattr(CSVImageDataset, "load_raw", lambda self, i: pytest.fail("decoded on reuse"))
    again = _csv(tmp_path)
    attach_cache(again, tmp_path / "c", progress=False)
    assert again.paths == ds.paths and again.skipped == ds.skipped
    np.testing.assert_array_equal(again.labels, ds.labels)


def test_patient_ids_stay_aligned_after_drops(tmp_path):
    _folder(tmp_path, n=6, missing=(1, 4))
    text = (tmp_path / "labels.csv").read_text().splitlines()
    text = [text[0] + ",patient"] + [f"{ln},P{k}" for k, ln in enumerate(text[1:])]
    (tmp_path / "labels.csv").write_text("\n".join(text) + "\n")
    ds = _csv(tmp_path, patient_col="patient")
    attach_cache(ds, tmp_path / "c", progress=False)
    assert ds.patient_ids == ["P0", "P2", "P3", "P5"]
    assert [os.path.basename(p) for p in ds.paths] == ["img0.png", "img2.png", "img3.png", "img5.png"]


def test_all_unreadable_is_an_error(tmp_path):
    _folder(tmp_path, n=3, missing=(0, 1, 2))
    ds = _csv(tmp_path)
    with pytest.raises(ValueError, match=r"every one of the 3 images of split 'train' is unreadable.*img0\.png"):
        attach_cache(ds, tmp_path / "c", progress=False)
    assert list((tmp_path / "c").glob("*.npy")) == []  # nothing half-written left behind
    assert ds.__dict__.get("_image_cache") is None and len(ds) == 3


def test_interrupted_build_leaves_no_cache(tmp_path, monkeypatch):
    _folder(tmp_path, n=6)
    from fact_fast.data.readers import CSVImageDataset

    original = CSVImageDataset.load_raw

    def dies_at_4(self, i):
        if i == 4:
            raise KeyboardInterrupt  # a crash / Ctrl-C mid-build
        return original(self, i)

    monkeypatch.setattr(CSVImageDataset, "load_raw", dies_at_4)
    with pytest.raises(KeyboardInterrupt):
        attach_cache(_csv(tmp_path), tmp_path / "c", progress=False)
    assert sorted(p.suffix for p in (tmp_path / "c").iterdir()) == [".lock"]  # no torn .npy, no temp
    # a temp file left by a SIGKILLed build is removed by the next build
    npy = cache_file(_csv(tmp_path), tmp_path / "c", 16)
    stale = npy.with_name(npy.stem + ".tmp-999999-deadbeef.npy")
    stale.write_bytes(b"partial")
    monkeypatch.setattr(CSVImageDataset, "load_raw", original)
    ds = _csv(tmp_path)
    attach_cache(ds, tmp_path / "c", progress=False)
    assert not stale.exists() and npy.is_file() and len(ds) == 6


def test_thread_pool_build_matches_serial(tmp_path):
    _folder(tmp_path, n=12, rgb=True, corrupt=(7,))
    serial, threaded = _csv(tmp_path, channels="rgb"), _csv(tmp_path, channels="rgb")
    attach_cache(serial, tmp_path / "a", progress=False, workers=0)
    attach_cache(threaded, tmp_path / "b", progress=False, workers=4)
    np.testing.assert_array_equal(np.load(serial.__dict__["_image_cache"].path),
                                  np.load(threaded.__dict__["_image_cache"].path))
    assert serial.skipped == threaded.skipped and len(serial) == 11


def _attach_in_child(root, cache_dir, queue):
    ds = _csv(root)
    calls = []
    original = ds.load_raw
    ds.load_raw = lambda i: calls.append(i) or original(i)
    attach_cache(ds, cache_dir, progress=False)
    queue.put((len(calls), [ds[i][0].sum().item() for i in range(len(ds))]))


def test_concurrent_processes_build_once(tmp_path):
    # two DDP ranks sharing a cache directory: one builds, the other waits and reuses
    _folder(tmp_path, n=10)
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_attach_in_child, args=(tmp_path, tmp_path / "c", queue)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sorted(n for n, _ in results) == [0, 10]
    assert results[0][1] == results[1][1]


def test_uncacheable_datasets_and_bad_arguments(tmp_path):
    syn = build_dataset("synthetic_motifs", "val", num_samples=4, image_size=16)
    assert attach_cache(syn, tmp_path / "c") is None and syn.__dict__.get("_image_cache") is None
    _folder(tmp_path)
    ds = _csv(tmp_path)
    with pytest.raises(TypeError, match="before wrapping"):
        attach_cache(MultiViewDataset(ds, list(range(len(ds)))), tmp_path / "c")
    with pytest.raises(ValueError, match="workers"):
        attach_cache(ds, tmp_path / "c", workers=-1)
    del ds.pipeline
    with pytest.raises(ValueError, match="size"):
        attach_cache(ds, tmp_path / "c")


def test_image_cache_pickles_without_pixels(tmp_path):
    _folder(tmp_path, n=4)
    ds = _csv(tmp_path, image_size=64)
    cache = attach_cache(ds, tmp_path / "c", progress=False)
    _ = cache[0]  # the memory map is open
    blob = pickle.dumps(ds)
    assert len(blob) < 10_000  # 4 x 64 x 64 pixels would be 16 kB
    clone = pickle.loads(blob)
    assert torch.equal(clone[2][0], ds[2][0])


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_workers_with_cache(tmp_path, context):
    _folder(tmp_path, n=10, corrupt=(3,))
    ds = _csv(tmp_path)
    attach_cache(ds, tmp_path / "c", progress=False)
    expect_x = torch.stack([ds[i][0] for i in range(len(ds))])
    expect_y = torch.from_numpy(ds.labels)
    workers = 2 if context == "fork" else 1  # a spawned worker re-imports torch: keep it to one
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=workers, persistent_workers=True,
                                         collate_fn=collate, multiprocessing_context=context)
    for _epoch in range(2):
        xs, ys = zip(*list(loader))
        assert torch.equal(torch.cat(xs), expect_x) and torch.equal(torch.cat(ys), expect_y)
    del loader


def test_train_pipeline_on_cached_images(tmp_path):
    _folder(tmp_path, n=4)
    ds = build_dataset("csv", "train", root=str(tmp_path), val_fraction=0, test_fraction=0, image_size=16,
                       pipeline={"resize": 20, "crop": "random_resized", "hflip": 0.5})
    attach_cache(ds, tmp_path / "c", progress=False)
    torch.manual_seed(3)
    a = [ds[i][0] for i in range(4)]
    torch.manual_seed(3)
    b = [ds[i][0] for i in range(4)]
    assert all(x.shape == (3, 16, 16) and torch.equal(x, y) for x, y in zip(a, b))
