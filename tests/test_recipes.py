from dataclasses import replace

import pytest

from cifar10_classifier.training.recipes import RECIPES, Recipe, RecipeError, load_config_file, resolve_recipe


def test_classic_recipe_is_the_keras_one():
    classic = RECIPES["classic"]
    assert classic.optimizer == "adam" and classic.val_fraction == 0.2
    assert classic.early_stopping_patience == 10
    assert (classic.rotation_degrees, classic.zoom, classic.shift, classic.flip) == (15.0, 0.1, 0.1, "random")


def test_default_recipes_exist():
    assert {"classic", "fast", "fast-small", "fast-large"} <= set(RECIPES)
    large, fast = RECIPES["fast-large"], RECIPES["fast"]
    assert large.model_config["widths"] == [64, 256, 256] and large.epochs == 8
    assert (large.optimizer, large.crop_sizes, large.tta_level) == (fast.optimizer, fast.crop_sizes, fast.tta_level)


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
    with pytest.raises(RecipeError, match="no field"):
        resolve_recipe("fast", {"epocs": 3})
    with pytest.raises(RecipeError, match="unknown recipe"):
        resolve_recipe("nope")


def test_crop_size_per_epoch():
    assert [RECIPES["fast"].crop_size_for_epoch(e) for e in (1, 2, 3)] == [24, 24, 32]
    growing = resolve_recipe("fast", {"crop_sizes": "[16, 24]"})  # typed from the CLI's literal
    assert [growing.crop_size_for_epoch(e) for e in (1, 2, 3, 6)] == [16, 24, 32, 32]
    with pytest.raises(RecipeError, match="crop_sizes"):
        resolve_recipe("fast", {"crop_sizes": "[40]"})


@pytest.mark.parametrize(
    ("field", "typo", "allowed"),
    [
        ("optimizer", "sgd", "sgd-nesterov, adam, muon"),
        ("schedule", "cosine", "constant, linear, plateau"),
        ("flip", "alternate", "none, random, alternating"),
        ("label_format", "onehot", "index, one-hot"),
        ("loss_reduction", "avg", "mean, sum"),
        ("precision", "fp16", "auto, fp32, bf16"),
    ],
)
def test_choice_fields_refuse_values_they_cannot_take(field, typo, allowed, tmp_path):
    message = f"recipe field {field} must be one of {allowed}, not '{typo}'"
    with pytest.raises(RecipeError) as caught:
        resolve_recipe("fast", {field: typo})  # as --set gives it
    assert str(caught.value) == message
    config = tmp_path / "overrides.toml"
    config.write_text(f'{field} = "{typo}"\n')
    with pytest.raises(RecipeError, match=message):
        resolve_recipe("fast", load_config_file(config))  # as --config gives it
    with pytest.raises(RecipeError, match=field):
        replace(RECIPES["fast"], **{field: typo})  # and from code


def test_a_run_config_round_trips_including_older_field_names():
    fast = RECIPES["fast"]
    assert Recipe.from_dict(fast.to_dict()) == fast
    older = {**fast.to_dict(), "bf16": "auto", "crop_size": 24, "crop_epochs": 2}
    del older["precision"], older["crop_sizes"]
    assert Recipe.from_dict(older) == fast
