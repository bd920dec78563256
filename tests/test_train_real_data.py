"""A short real training on the shared archive (skipped where ../shared is absent, as in a fresh clone)."""

import numpy as np
import pytest
from support import shared_archive_or_skip

from cifar10_classifier.data import load_dataset
from cifar10_classifier.evaluation.metrics import predict_logits
from cifar10_classifier.training.loop import train
from cifar10_classifier.training.recipes import resolve_recipe
from cifar10_classifier.training.tensors import normalized_tensor


@pytest.mark.slow
def test_a_few_hundred_steps_on_real_data_beat_chance_clearly(tmp_path):
    dataset = load_dataset(shared_archive_or_skip())
    # ~390 steps of batch 128 with a small net: well under a minute on two cores.
    recipe = resolve_recipe("fast", {"model_config": {"widths": [16, 32, 32]}, "batch_size": 128, "epochs": 1})
    model, state, _ = train(recipe, dataset, tmp_path, show_progress=False)
    test_images = normalized_tensor(np.asarray(dataset.test.images_uint8[::5]), model.head.weight.device, True)
    logits = predict_logits(model, test_images)
    accuracy = float((logits.argmax(1) == np.asarray(dataset.test.labels[::5])).mean())
    assert accuracy > 0.35, f"test accuracy {accuracy:.3f} after {state.history[-1]}"
