import pytest

from cifar10_classifier.recipes import RECIPES, load_config_file, resolve_recipe


def test_classic_recipe_is_the_keras_one():
    classic = RECIPES["classic"]
    assert classic.optimizer == "adam" and classic.val_fraction == 0.2
    assert classic.early_stopping_patience == 10
    assert (classic.rotation_degrees, classic.zoom, classic.shift, classic.flip) == (15.0, 0.1, 0.1, "random")


def test_default_recipes_exist():
    assert {"classic", "fast", "fast-small", "fast-large"} <= set(RECIPES)
    large, fast = RECIPES["fast-large"], RECIPES["fast"]
    assert large.model_config["widths"] == [64, 256, 256] and large.epochs == 8
    assert (large.optimizer, large.crop_epochs, large.tta_level) == (fast.optimizer, fast.crop_epochs, fast.tta_level)


def test_overrides_are_typed_and_reach_model_config(tmp_path):
    recipe = resolve_recipe(
        "fast", {"epochs": "7", "lr": "0.5", "model_config.widths": "[8, 16, 16]", "channels_last": "false"}
    )
    assert recipe.epochs == 7 and recipe.lr == 0.5 and recipe.model_config["widths"] == [8, 16, 16]
    assert recipe.channels_last is False
    # A model_config key the recipe does not set yet is typed by its literal ("gelu" stays a string).
    new_keys = resolve_recipe("fast", {"model_config.whiten_eps": "5e-3", "model_config.activation": "gelu"})
    assert new_keys.model_config["whiten_eps"] == 0.005 and new_keys.model_config["activation"] == "gelu"
    config = tmp_path / "c.toml"
    config.write_text("epochs = 2\nbatch_size = 64\n")
    assert load_config_file(config) == {"epochs": 2, "batch_size": 64}


def test_unknown_field_is_refused():
    with pytest.raises(KeyError, match="no field"):
        resolve_recipe("fast", {"epocs": 3})
    with pytest.raises(KeyError, match="unknown recipe"):
        resolve_recipe("nope")


def test_crop_size_per_epoch():
    fixed = resolve_recipe("fast", {"crop_size": "24", "crop_epochs": "2", "crop_sizes": "[]"})
    assert [fixed.crop_size_for_epoch(e) for e in (1, 2, 3)] == [24, 24, 32]
    # A per-epoch schedule (typed from the CLI's literal) replaces crop_size/crop_epochs.
    growing = resolve_recipe("fast", {"crop_sizes": "[16, 24]", "crop_epochs": "5"})
    assert [growing.crop_size_for_epoch(e) for e in (1, 2, 3, 6)] == [16, 24, 32, 32]
