import pytest
import torch

from cifar10_classifier.training import augment


def _images():
    return torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)


def _generator(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(
    "apply",
    [
        lambda x, g: augment.random_flip(x, g, probability=0.0),
        lambda x, g: augment.random_translate(x, g, 0),
        lambda x, g: augment.random_affine(x, g, 0.0, 0.0, 0.0),
        lambda x, g: augment.random_crop(x, g, 8),
        lambda x, g: augment.random_blur(x, g, 0.5, 0.0),
        lambda x, g: augment.random_blur(x, g, 0.0, 0.2),
    ],
)
def test_identity_at_zero_strength(apply):
    images = _images()
    assert torch.equal(apply(images, _generator()), images)


@pytest.mark.parametrize(
    "apply",
    [
        lambda x, g: augment.random_flip(x, g),
        lambda x, g: augment.random_translate(x, g, 2),
        lambda x, g: augment.random_affine(x, g, 15.0, 0.1, 0.1),
        lambda x, g: augment.random_blur(x, g, 0.5, 0.2),
    ],
)
def test_shapes_dtypes_and_reproducible_by_seed(apply):
    images = torch.randn(16, 3, 32, 32)
    first, second = apply(images, _generator(7)), apply(images, _generator(7))
    assert first.shape == images.shape and first.dtype == images.dtype
    assert torch.equal(first, second)
    assert not torch.equal(apply(images, _generator(8)), first) or torch.equal(first, images)


def test_flip_mirrors_whole_images():
    images = torch.randn(64, 3, 4, 4)
    flipped = augment.random_flip(images, _generator(), probability=1.0)
    assert torch.equal(flipped, images.flip(-1))


def test_alternating_flip_alternates_per_epoch():
    images = torch.randn(8, 3, 4, 4)
    phase = torch.tensor([True, False] * 4)
    even, odd = augment.alternating_flip(images, phase, 0), augment.alternating_flip(images, phase, 1)
    assert torch.equal(even[0], images[0].flip(-1)) and torch.equal(odd[0], images[0])
    assert torch.equal(even[1], images[1]) and torch.equal(odd[1], images[1].flip(-1))


def test_translate_moves_content_by_whole_pixels():
    images = torch.randn(32, 1, 10, 10)
    shifted = augment.random_translate(images, _generator(), 2)
    for original, moved in zip(images, shifted, strict=True):
        # The centre 6x6 of the original appears somewhere within the shifted image, shifted by <= 2 px.
        centre = original[:, 2:8, 2:8]
        assert any(
            torch.equal(moved[:, 2 + dy : 8 + dy, 2 + dx : 8 + dx], centre)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
        )


@pytest.mark.parametrize("level,count", [(0, 1), (1, 2), (2, 6)])
def test_tta_views_weights_sum_to_one(level, count):
    views = augment.tta_views(torch.randn(2, 3, 8, 8), level)
    assert len(views) == count
    assert sum(weight for _, weight in views) == pytest.approx(1.0)
    assert all(view.shape == (2, 3, 8, 8) for view, _ in views)


def test_random_crop_takes_windows_of_the_image():
    images = torch.randn(64, 3, 32, 32)
    crops = augment.random_crop(images, _generator(3), 24)
    assert crops.shape == (64, 3, 24, 24) and torch.equal(crops, augment.random_crop(images, _generator(3), 24))
    for image, crop in zip(images, crops, strict=True):
        windows = image.unfold(1, 24, 1).unfold(2, 24, 1)  # (3, 9, 9, 24, 24): every 24x24 window
        assert any(torch.equal(windows[:, i, j], crop) for i in range(9) for j in range(9))


def test_blur_softens_only_the_chosen_images_and_keeps_flat_ones_flat():
    images = torch.randn(64, 3, 12, 12)
    images[0] = 0.7  # a flat image stays flat whatever the filter
    blurred = augment.random_blur(images, _generator(5), 0.5, 0.2)
    changed = [not torch.equal(a, b) for a, b in zip(images[1:], blurred[1:], strict=True)]
    assert 10 < sum(changed) < 53  # about half of the 63 noisy images
    assert torch.allclose(blurred[0], images[0])
    # A blur never adds detail: each softened image has less energy between neighbouring pixels.
    for original, soft, was_changed in zip(images[1:], blurred[1:], changed, strict=True):
        if was_changed:
            assert soft.diff(dim=-1).abs().sum() < original.diff(dim=-1).abs().sum()


def test_blur_of_strength_a_is_the_separable_3_tap_filter():
    image = torch.zeros(1, 1, 5, 5)
    image[0, 0, 2, 2] = 1.0
    blurred = augment.random_blur(image, _generator(), 1.0, 0.2)  # probability 1: always chosen
    side = blurred[0, 0, 2, 1].item() / blurred[0, 0, 2, 2].item()
    centre = blurred[0, 0, 2, 2].sqrt().item()
    taps = torch.tensor([centre * side, centre, centre * side])
    assert torch.allclose(blurred[0, 0, 1:4, 1:4], taps[:, None] * taps[None, :], atol=1e-6)
    assert 0 < centre * side <= 0.2 and abs(taps.sum().item() - 1) < 1e-6
    assert blurred.sum().item() == pytest.approx(1.0)
