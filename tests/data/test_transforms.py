"""The train/eval image pipelines (fact_fast.data.transforms.ImagePipeline)."""
import numpy as np
import pytest
import torch

from fact_fast.data.transforms import ImagePipeline

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def _pattern(h=40, w=50, rgb=False, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3) if rgb else (h, w), dtype=np.uint8)


def _unnormalize(x, mean=MEAN, std=STD):
    return x * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("rgb", [False, True])
def test_output_shape_and_dtype(train, rgb):
    p = ImagePipeline(image_size=24, channels="rgb" if rgb else "gray", resize=28, crop="random_resized",
                      hflip=0.5, rotate=10, translate=0.1)
    x = p.build(train)(_pattern(37, 53, rgb))
    assert x.shape == (3, 24, 24) and x.dtype == torch.float32 and torch.isfinite(x).all()


@pytest.mark.parametrize("train", [False, True])
def test_normalisation_of_a_constant_image(train):
    p = ImagePipeline(image_size=16, crop="random_resized", hflip=0.5, rotate=0)
    gray = p.build(train)(np.full((30, 20), 100, np.uint8))
    want = torch.tensor([(100 / 255 - m) / s for m, s in zip(MEAN, STD)]).view(3, 1, 1).expand(3, 16, 16)
    torch.testing.assert_close(gray, want, atol=1e-6, rtol=0)
    rgb = ImagePipeline(image_size=16, channels="rgb").build(train)(
        np.broadcast_to(np.array([255, 0, 51], np.uint8), (20, 20, 3)).copy())
    want = torch.tensor([(1 - MEAN[0]) / STD[0], (0 - MEAN[1]) / STD[1], (0.2 - MEAN[2]) / STD[2]])
    torch.testing.assert_close(rgb, want.view(3, 1, 1).expand(3, 16, 16), atol=1e-6, rtol=0)
    other = ImagePipeline(image_size=8, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)).build(False)
    torch.testing.assert_close(other(np.zeros((8, 8), np.uint8)), torch.full((3, 8, 8), -1.0))


def test_gray_is_replicated_rgb_is_not():
    img = _pattern(32, 32)
    x = _unnormalize(ImagePipeline(image_size=32).build(False)(img))
    torch.testing.assert_close(x[0], x[1], atol=1e-6, rtol=0)
    torch.testing.assert_close(x[1], x[2], atol=1e-6, rtol=0)
    torch.testing.assert_close(x[0], torch.from_numpy(img).float() / 255, atol=1e-6, rtol=0)  # same size: no resampling
    rgb = _pattern(32, 32, rgb=True)
    y = _unnormalize(ImagePipeline(image_size=32, channels="rgb").build(False)(rgb))
    torch.testing.assert_close(y, torch.from_numpy(rgb).permute(2, 0, 1).float() / 255, atol=1e-6, rtol=0)


def test_eval_resize_then_centre_crop():
    img = np.zeros((40, 40), np.uint8)
    img[:, :4] = img[:, -4:] = 255  # bright borders 4 px wide: outside the centre crop
    img[:4, :] = img[-4:, :] = 255
    x = _unnormalize(ImagePipeline(image_size=24, resize=32).build(False)(img))
    assert x.shape == (3, 24, 24)
    assert x.max() < 1e-6  # the border (scaled to 3.2 px of 32) lies outside the central 24 px
    full = _unnormalize(ImagePipeline(image_size=24).build(False)(img))  # no crop: borders kept
    assert full[:, :, 0].min() > 0.9 and full[:, 12, 12].max() < 1e-6


def test_train_determinism_under_a_fixed_seed():
    p = ImagePipeline(image_size=24, resize=32, crop="random", hflip=0.5, rotate=15, translate=0.1)
    t = p.build(True)
    img = _pattern(45, 45)
    torch.manual_seed(7)
    a = [t(img) for _ in range(4)]
    torch.manual_seed(7)
    b = [t(img) for _ in range(4)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(a[0], x) for x in a[1:])  # it does augment
    e = p.build(False)
    assert torch.equal(e(img), e(img))  # eval is deterministic


def test_hflip_mirrors_and_crop_modes():
    img = _pattern(24, 24)
    flip = ImagePipeline(image_size=24, hflip=1.0).build(True)(img)
    plain = ImagePipeline(image_size=24).build(False)(img)
    assert torch.equal(flip, plain.flip(-1))
    torch.manual_seed(0)
    crop = _unnormalize(ImagePipeline(image_size=16, resize=24, crop="random").build(True)(img))
    src = torch.from_numpy(img).float() / 255
    hits = [(i, j) for i in range(9) for j in range(9) if torch.allclose(crop[0], src[i:i + 16, j:j + 16], atol=1e-6)]
    assert len(hits) == 1  # "random" = an unscaled 16 px window of the 24 px image


def test_pipeline_validation_and_round_trip():
    p = ImagePipeline(image_size=32, channels="rgb", resize=40, crop="random_resized", scale=(0.5, 1.0),
                      hflip=0.25, rotate=5.0, translate=0.05)
    assert ImagePipeline.from_dict(p.to_dict()) == p
    assert ImagePipeline.from_dict(dict(p.to_dict(), unknown_key=1)) == p
    assert p.resize_to == 40 and ImagePipeline(image_size=32).resize_to == 32
    for bad, match in [({"image_size": 0}, "image_size"), ({"channels": "bgr"}, "channels"),
                       ({"crop": "center"}, "crop"), ({"resize": 8, "image_size": 16}, "resize"),
                       ({"hflip": 1.5}, "hflip"), ({"scale": (0.0, 1.0)}, "scale"),
                       ({"mean": (0.5, 0.5)}, "mean")]:
        with pytest.raises(ValueError, match=match):
            ImagePipeline(**bad)
    t = ImagePipeline(image_size=8).build(False)
    with pytest.raises(TypeError, match="uint8"):
        t(np.zeros((8, 8), np.float32))
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        t(np.zeros((8, 8, 4), np.uint8))


@pytest.mark.parametrize("train", [False, True])
def test_gray_geometry_on_one_channel_equals_three_identical_channels(train):
    # the pipeline replicates gray after the geometric steps; same result as replicating first
    from torchvision.transforms import v2

    from fact_fast.data.base import to_uint8_chw

    raw = _pattern(61, 47, seed=3)
    p = ImagePipeline(image_size=32, resize=40, crop="random_resized", hflip=0.5, rotate=10, translate=0.1)
    t = p.build(train)
    three = v2.Compose(list(t.geometry.transforms) + list(t.finish.transforms))
    for seed in range(3):
        torch.manual_seed(seed)
        a = t(raw)
        torch.manual_seed(seed)
        assert torch.equal(a, three(to_uint8_chw(raw)))
