import pytest
import torch

from cifar10_classifier.models import ModelConfigError, create_model, model_config, model_names


@pytest.mark.parametrize("name", model_names())
def test_every_registered_model_runs_forward_and_backward(name):
    torch.manual_seed(0)
    model = create_model(name)
    images = torch.randn(4, 3, 32, 32)
    logits = model(images)
    assert logits.shape == (4, 10)
    logits.sum().backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for p in trainable)


def test_unknown_model_and_setting_are_refused():
    with pytest.raises(ModelConfigError, match="unknown model"):
        create_model("nope")
    with pytest.raises(ModelConfigError, match="no settings"):
        model_config("fast-net", depth=3)
    with pytest.raises(ModelConfigError, match="cannot be built from model_config"):
        create_model("classic-net", widths=[8, 16])  # 2 blocks, the default 3 dropout rates


def test_fast_net_whitening_and_frozen_parts():
    model = create_model("fast-net", widths=(8, 16, 16))
    assert not model.whiten.weight.requires_grad
    assert not model.blocks[0].norm1.weight.requires_grad  # BN without learned scale
    # Spatially correlated images (smoothed noise, stronger along rows than columns): a whitening filter that
    # mixed up kernel rows and columns would leave these patches correlated.
    noise = torch.randn(64, 3, 34, 34) * torch.tensor([1.0, 2.0, 0.5]).view(1, 3, 1, 1)
    images = noise[:, :, 1:33, 2:34] + 0.8 * noise[:, :, 1:33, 1:33] + 0.3 * noise[:, :, :32, 2:34]
    model.init_whitening(images)
    # The whitened patches of the data are decorrelated: covariance of the first half of channels ~ identity.
    with torch.no_grad():
        out = torch.nn.functional.conv2d(images, model.whiten.weight[:12])
    flat = out.transpose(0, 1).reshape(12, -1)
    covariance = torch.cov(flat)
    assert torch.allclose(covariance.diagonal(), torch.ones(12), atol=0.1)
