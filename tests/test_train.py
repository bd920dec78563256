import copy
import json
from dataclasses import replace

import pytest
import torch
from support import tiny_dataset, tiny_recipe

from cifar10_classifier.training import loop as train_module
from cifar10_classifier.training.loop import lr_multiplier, train


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_short_training_learns_the_tiny_task(tmp_path, precision):
    # Both paths on every CPU: bf16 autocast runs (slowly) where the CPU emulates it, too.
    dataset = tiny_dataset()
    _, state, card = train(tiny_recipe("fast", epochs=4, precision=precision), dataset, tmp_path, show_progress=False)
    assert state.epoch == 4 and len(state.history) == 4
    # Well above chance (0.1), and improving: the tiny task is learnable in a few dozen steps.
    assert state.history[-1]["train_accuracy"] > 0.35
    assert state.history[-1]["train_loss"] < state.history[0]["train_loss"]
    assert card["classes"][3] == "cat" and card["data"]["sha256"] == "0" * 64
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["recipe"]["epochs"] == 4
    expected = {"requested": precision, "used": precision, "reason": f"{precision}: the recipe asks for it"}
    assert config["precision"] == card["precision"] == expected


def test_the_environment_chooses_what_auto_means_and_the_run_records_why(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR10_PRECISION", "fp32")
    train(tiny_recipe("fast", epochs=1), tiny_dataset(), tmp_path, show_progress=False)
    recorded = json.loads((tmp_path / "config.json").read_text())["precision"]
    assert recorded == {"requested": "auto", "used": "fp32", "reason": "auto -> fp32: CIFAR10_PRECISION=fp32"}


def test_classic_recipe_trains_with_validation_and_one_hot_labels(tmp_path):
    dataset = tiny_dataset()
    _, state, _ = train(
        tiny_recipe("classic", epochs=2, label_format="one-hot"), dataset, tmp_path, show_progress=False
    )
    assert all(row["val_loss"] is not None for row in state.history)


def test_one_hot_and_index_losses_agree():
    recipe = tiny_recipe("classic", label_smoothing=0.1)
    logits, labels = torch.randn(6, 10), torch.randint(0, 10, (6,))
    index_loss = train_module.classification_loss(logits, labels, recipe)
    one_hot = replace(recipe, label_format="one-hot")
    assert torch.allclose(index_loss, train_module.classification_loss(logits, labels, one_hot), atol=1e-6)


def test_early_stopping_stops_at_patience_and_restores_best_weights(tmp_path, monkeypatch):
    val_losses = iter([1.0, 0.5, 0.7, 0.8, 0.9, 1.0, 1.1])
    snapshots = []

    def scripted_validation(model, *args, **kwargs):
        snapshots.append(copy.deepcopy(model.state_dict()))
        return next(val_losses), 0.5

    monkeypatch.setattr(train_module, "evaluate_loss_accuracy", scripted_validation)
    recipe = tiny_recipe("classic", epochs=7, early_stopping_patience=2)
    model, state, card = train(recipe, tiny_dataset(), tmp_path, show_progress=False)
    assert state.epoch == 4  # best at epoch 2, then 2 epochs without improvement
    assert state.best_epoch == 2 and card["stopped_early"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, snapshots[1][key]), key


@pytest.mark.parametrize(
    "extras",
    [
        {},
        {"lookahead_samples": 80, "whiten_bias_epochs": 1},
        {"optimizer": "muon", "muon_lr": 0.05, "crop_sizes": [24]},
        {"crop_sizes": [16, 24]},
    ],
    ids=["plain", "lookahead", "muon-and-crops", "crop-schedule"],
)
def test_resume_after_interruption_gives_the_same_weights(tmp_path, monkeypatch, extras):
    dataset = tiny_dataset()
    recipe = tiny_recipe("fast", epochs=3, **extras)
    reference, _, _ = train(recipe, dataset, tmp_path / "straight", show_progress=False)

    real_save = train_module.save_checkpoint
    saves = []

    def save_then_die(path, *args):
        real_save(path, *args)
        saves.append(path)
        if len(saves) == 2:
            raise KeyboardInterrupt  # killed right after epoch 2's checkpoint

    monkeypatch.setattr(train_module, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(recipe, dataset, tmp_path / "interrupted", show_progress=False)
    monkeypatch.setattr(train_module, "save_checkpoint", real_save)
    resumed, state, _ = train(recipe, dataset, tmp_path / "interrupted", resume=True, show_progress=False)
    assert state.epoch == 3 and [row["epoch"] for row in state.history] == [1, 2, 3]
    for key, value in reference.state_dict().items():
        assert torch.allclose(value.float(), resumed.state_dict()[key].float(), atol=1e-6), key


@pytest.mark.parametrize("lr", [0.01, 0.001])
def test_summed_loss_weight_decay_is_per_sample_and_decoupled_from_lr(lr):
    recipe = tiny_recipe("fast", lr=lr, weight_decay=1e-4, momentum=0.5)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    model.add_module("norm", torch.nn.BatchNorm1d(4))
    optimizer = train_module.build_optimizer(model, recipe)
    before = [p.detach().clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    # First Nesterov step on a zero gradient: p -= lr * (1 + momentum) * weight_decay_of_group * p. The recipe's
    # rate removes weight_decay * batch_size of each weight per step, whatever the lr (and in every group).
    expected = 1 - (1 + recipe.momentum) * recipe.weight_decay * recipe.batch_size
    for old, new in zip(before, model.parameters(), strict=True):
        assert torch.allclose(new, old * expected, atol=1e-7)


def test_whitening_bias_freezes_after_its_epochs(tmp_path, monkeypatch):
    biases = []
    real_save = train_module.save_checkpoint

    def record(path, model, *args):
        biases.append(model.whiten.bias.detach().clone())
        real_save(path, model, *args)

    monkeypatch.setattr(train_module, "save_checkpoint", record)
    model, _, _ = train(
        tiny_recipe("fast", epochs=3, whiten_bias_epochs=1), tiny_dataset(), tmp_path, show_progress=False
    )
    assert not torch.equal(biases[0], torch.zeros_like(biases[0]))  # it trained in epoch 1
    assert torch.equal(biases[0], biases[1]) and torch.equal(biases[1], biases[2])
    # Frozen for good in one process: no gradient is computed for it (nor through the first conv's input).
    assert not model.whiten.bias.requires_grad and model.whiten.bias.grad is None


def test_linear_schedule_warms_up_and_decays():
    recipe = tiny_recipe("fast")
    assert lr_multiplier(0, 100, recipe) == pytest.approx(recipe.lr_start)
    assert lr_multiplier(20, 100, recipe) == pytest.approx(1.0)
    assert lr_multiplier(100, 100, recipe) == pytest.approx(recipe.lr_end)


def test_progress_prints_one_line_per_epoch(tmp_path, capsys):
    train(tiny_recipe("fast", epochs=2), tiny_dataset(), tmp_path, show_progress=True)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch")]
    assert len(lines) == 2 and "img/s" in lines[0] and "eta" in lines[0]


def test_augment_batch_applies_the_recipes_blur_reproducibly():
    images, phase = torch.randn(32, 3, 32, 32), torch.zeros(32, dtype=torch.bool)
    sharp = tiny_recipe("fast", translate=0, crop_sizes=[], blur_probability=0.0)
    soft = replace(sharp, blur_probability=1.0, blur_strength=0.2)

    def run(recipe, seed=3):
        return train_module.augment_batch(images, phase, 1, recipe, torch.Generator().manual_seed(seed))

    assert torch.equal(run(soft), run(soft))
    assert (run(soft) - run(sharp)).abs().mean() > 0.01  # every image softened
