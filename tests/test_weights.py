import pytest
import torch

from cifar10_classifier.models import create_model
from cifar10_classifier.models.weights import load_weights, save_weights
from cifar10_classifier.runs import RunFolder, RunFolderError


def test_weights_and_card_round_trip(tmp_path):
    model = create_model("fast-net", widths=(8, 8, 8))
    card = {"model": "fast-net", "model_config": {"widths": [8, 8, 8]}, "name": "tiny"}
    save_weights(model, RunFolder(tmp_path), card)
    loaded, loaded_card = load_weights(tmp_path / "model.safetensors")
    assert loaded_card == card and not loaded.training
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_damaged_weights_say_to_retrain(tmp_path):
    RunFolder(tmp_path).write_card({"model": "fast-net", "model_config": {"widths": [8, 8, 8]}})
    (tmp_path / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(RunFolderError, match="damaged weights or card"):
        load_weights(tmp_path)
