import numpy as np
import torch

from cifar10_classifier.preprocess import normalize
from cifar10_classifier.training.tensors import normalized_tensor


def test_the_torch_twin_matches_the_serving_normalization():
    images = np.random.default_rng(0).integers(0, 256, size=(5, 32, 32, 3), dtype=np.uint8)
    tensor = normalized_tensor(images, torch.device("cpu"), channels_last=True)
    assert tensor.shape == (5, 3, 32, 32) and tensor.is_contiguous(memory_format=torch.channels_last)
    np.testing.assert_allclose(tensor.numpy(), normalize(images), rtol=1e-5, atol=1e-5)
    plain = normalized_tensor(images, torch.device("cpu"), channels_last=False)
    assert plain.is_contiguous() and torch.equal(plain, tensor)
