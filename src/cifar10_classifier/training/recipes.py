"""Named training recipes as typed configs. Every field can be overridden from the CLI or a config file, and
the resolved recipe is written beside the run's results. Choice fields are `Literal`s, checked when a recipe is
built, so a typo (`flip=alternate`) fails at once instead of training something else. What was measured to choose
each value is in docs/experiments.md."""

from __future__ import annotations

import ast
import functools
import json
import tomllib
import typing
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Literal, get_args

from cifar10_classifier.errors import UserError
from cifar10_classifier.machine import Precision

# Images per forward pass when evaluating, unless a recipe says otherwise (the fast recipes use 100 on CPU).
DEFAULT_EVAL_BATCH_SIZE = 500

Optimizer = Literal["sgd-nesterov", "adam", "muon"]
Schedule = Literal["constant", "linear", "plateau"]
Flip = Literal["none", "random", "alternating"]
LabelFormat = Literal["index", "one-hot"]
LossReduction = Literal["mean", "sum"]


class RecipeError(UserError, ValueError):
    """No such recipe or field, or a field has a value it cannot take; the message names the allowed ones."""


@functools.cache
def _choices() -> dict[str, tuple]:
    """Each Literal field of Recipe -> its allowed values."""
    hints = typing.get_type_hints(Recipe)
    return {name: get_args(hint) for name, hint in hints.items() if typing.get_origin(hint) is Literal}


@dataclass(frozen=True)
class Recipe:
    name: str
    model: str
    model_config: dict = field(default_factory=dict)
    # Schedule and optimisation
    epochs: int = 10  # the maximum when early stopping is on
    batch_size: int = 256  # the global batch: N distributed ranks train batch_size / N each
    optimizer: Optimizer = "sgd-nesterov"  # "muon": Muon for conv filters, Nesterov SGD for the rest
    lr: float = 1e-3  # per-sample learning rate when loss_reduction == "sum", else the usual step size
    momentum: float = 0.9
    weight_decay: float = 0.0  # per sample and decoupled from lr when loss_reduction == "sum" (build_optimizer)
    muon_lr: float = 0.0  # with optimizer "muon": each filter bank's step size relative to its (fixed) norm
    muon_momentum: float = 0.6
    bias_lr_scale: float = 1.0  # BN shifts learn this much faster (airbench: 64), with wd divided by it
    loss_reduction: LossReduction = "mean"  # "sum" makes lr a per-sample rate, independent of the batch size
    label_smoothing: float = 0.0
    label_format: LabelFormat = "index"  # "one-hot" is Keras' categorical cross-entropy: the same loss
    schedule: Schedule = "constant"  # "linear": warmup then linear decay
    warmup_fraction: float = 0.0
    lr_start: float = 1.0  # multipliers of lr at step 0, at the end of warmup (1.0) and at the last step
    lr_end: float = 1.0
    plateau_patience: int = 3
    plateau_factor: float = 0.5
    # Data and augmentation
    val_fraction: float = 0.2
    flip: Flip = "random"
    translate: int = 0  # pixels, reflect-padded
    # One training window per epoch for the first len(crop_sizes) epochs (e.g. [24, 24]), then whole images:
    # fewer pixels make those epochs cheaper, and the nets end in a global pool, so any size fits.
    crop_sizes: list[int] = field(default_factory=list)
    # A random share of each batch is softened by a 3-tap blur of random strength (augment.random_blur), so
    # photos, which reach the net through an antialiased downscale, look like what it trained on.
    blur_probability: float = 0.0
    blur_strength: float = 0.0  # the largest side tap a of [a, 1 - 2a, a]
    rotation_degrees: float = 0.0
    zoom: float = 0.0
    shift: float = 0.0
    # Early stopping on validation loss; 0 turns it off
    early_stopping_patience: int = 0
    # Evaluation
    tta_level: int = 0  # 0 none, 1 mirror, 2 mirror + 1-pixel translations
    eval_batch_size: int = DEFAULT_EVAL_BATCH_SIZE
    # Machine: "auto" follows $CIFAR10_PRECISION, else bf16 only where it runs natively (machine.choose_precision)
    precision: Precision = "auto"
    channels_last: bool = True
    threads: int = 0  # 0: all cores
    sync_batchnorm: bool = False  # for distributed runs
    seed: int = 0
    whiten_images: int = 5000  # images used to initialise a whitening layer, if the model has one
    whiten_bias_epochs: int = 0  # the whitening layer's bias trains this many epochs, then freezes (0: always)
    # Lookahead (airbench): every `lookahead_samples` samples the weights are pulled towards, and reset to, an
    # average of their recent values, more strongly as training ends; the average is the final model. 0: off.
    lookahead_samples: int = 0

    def __post_init__(self) -> None:
        for name, allowed in _choices().items():
            value = getattr(self, name)
            if value not in allowed:
                raise RecipeError(f"recipe field {name} must be one of {', '.join(allowed)}, not {value!r}")
        if not isinstance(self.crop_sizes, list) or not all(
            isinstance(size, int) and 0 < size <= 32 for size in self.crop_sizes
        ):
            raise RecipeError(f"recipe field crop_sizes must be a list of sizes from 1 to 32, not {self.crop_sizes!r}")
        if self.batch_size < 1 or self.epochs < 1:
            raise RecipeError(f"batch_size and epochs must be positive, not {self.batch_size} and {self.epochs}")

    def to_dict(self) -> dict:
        return asdict(self)

    def flat_fields(self) -> dict:
        """The fields with model_config's entries as `model_config.KEY`, the names --set takes."""
        values = self.to_dict()
        model_config = values.pop("model_config")
        return values | {f"model_config.{key}": value for key, value in model_config.items()}

    @classmethod
    def from_dict(cls, values: dict) -> Recipe:
        """A recipe as a run's config.json stores it (older runs' names included: bf16, crop_size/crop_epochs)."""
        values = dict(values)
        legacy_bf16 = values.pop("bf16", None)
        if legacy_bf16 is not None and "precision" not in values:
            values["precision"] = {"auto": "auto", True: "bf16", "true": "bf16"}.get(legacy_bf16, "fp32")
        crop_size, crop_epochs = values.pop("crop_size", 32), values.pop("crop_epochs", 0)
        if not values.get("crop_sizes") and crop_epochs:
            values["crop_sizes"] = [crop_size] * crop_epochs
        return cls(**values)

    def crop_size_for_epoch(self, epoch: int) -> int:
        """The training window of a 1-based epoch (32: whole images)."""
        return self.crop_sizes[epoch - 1] if epoch <= len(self.crop_sizes) else 32


RECIPES: dict[str, Recipe] = {
    # The Keras-tutorial recipe, faithful: affine augmentation, Adam + cross-entropy, 20% validation, early
    # stopping on validation loss with patience 10 restoring the best weights. One addition for a CPU budget:
    # Adam's rate decays linearly to 5% over at most 20 epochs (as far in 20 epochs as the original in ~40).
    "classic": Recipe(
        name="classic",
        model="classic-net",
        epochs=20,
        batch_size=128,
        optimizer="adam",
        lr=1e-3,
        loss_reduction="mean",
        schedule="linear",
        lr_end=0.05,
        val_fraction=0.2,
        flip="random",
        rotation_degrees=15.0,
        zoom=0.1,
        shift=0.1,
        early_stopping_patience=10,
        tta_level=0,
    ),
    # The fast default: airbench's net, schedule and tricks, sized for a 2-core CPU and what it makes cheap.
    "fast": Recipe(
        name="fast",
        model="fast-net",
        # Narrower than airbench (64-256-256) so that more epochs fit; ReLU fuses into the int8 convs.
        # whiten_eps 5e-3: the shared JPEGs' finest colour detail is mostly noise, which a small eps amplifies.
        model_config={"widths": [64, 128, 128], "whiten_eps": 5e-3},
        epochs=6,
        batch_size=128,  # many small steps: as many images/s on a CPU as a large batch, 3x the updates
        optimizer="muon",
        muon_lr=0.03,
        muon_momentum=0.8,
        lr=11.5 / (1024 * (1 + 1 / (1 - 0.85))),  # airbench's rate per sample (summed loss): head and BN shifts
        momentum=0.85,
        weight_decay=0.0153 / (1024 * (1 + 1 / (1 - 0.85))),  # per sample: airbench's 0.0153 at batch 1024
        bias_lr_scale=64.0,
        loss_reduction="sum",
        label_smoothing=0.2,
        schedule="linear",
        warmup_fraction=0.2,
        lr_start=0.2,
        lr_end=0.07,
        val_fraction=0.0,  # no model selection happens, so every training image trains (as airbench does)
        flip="alternating",
        translate=2,
        blur_probability=0.5,  # photos arrive through a downscale's blur: half of each batch is softened
        blur_strength=0.2,
        crop_sizes=[24, 24],  # a 24px epoch costs ~0.58 of a full one, for no loss of accuracy
        whiten_bias_epochs=1,  # then no step computes the first block's input gradient: 5-7% off each step
        tta_level=2,
        eval_batch_size=100,  # the timed TTA evaluation: batches of 100 stay in cache (1.6x the images/s of 500)
    ),
}
# Five minutes on the same CPU: narrower, 3 epochs, the first on 24x24 crops (with 3 epochs the full-size ones
# matter most).
RECIPES["fast-small"] = replace(
    RECIPES["fast"],
    name="fast-small",
    model_config={"widths": [32, 128, 128], "whiten_eps": 5e-3},
    epochs=3,
    crop_sizes=[24],
)
# airbench's compute with this recipe's plan: its widths and 8 epochs, ~2.2x the FLOPs of `fast` per epoch; for
# when accuracy matters more than minutes (a GPU, or the bundled model, which is trained once).
RECIPES["fast-large"] = replace(
    RECIPES["fast"],
    name="fast-large",
    model_config={"widths": [64, 256, 256], "whiten_eps": 5e-3},
    epochs=8,
)


def recipe_names() -> list[str]:
    return list(RECIPES)


def _coerce(value, current):
    """A CLI string -> the type of the field it overrides (current None: a new key, typed by its literal)."""
    if not isinstance(value, str) or isinstance(current, str):
        return value
    if isinstance(current, bool):
        return value.lower() in ("1", "true", "yes", "on")
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def load_config_file(path: Path) -> dict:
    text = path.read_text()
    return tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)


def resolve_recipe(name: str, overrides: dict | None = None) -> Recipe:
    """The named recipe with `overrides` applied ("model_config.widths" style keys reach into model_config)."""
    if name not in RECIPES:
        raise RecipeError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}")
    return apply_overrides(RECIPES[name], overrides)


def apply_overrides(recipe: Recipe, overrides: dict | None) -> Recipe:
    """`recipe` with `overrides` applied, each value coerced to its field's type (strings from --set included)."""
    known = {f.name: f for f in fields(Recipe)}
    changes: dict = {}
    model_config = dict(recipe.model_config)
    for key, value in (overrides or {}).items():
        key = key.replace("-", "_")
        if key.startswith("model_config."):
            sub = key.split(".", 1)[1]
            model_config[sub] = _coerce(value, model_config.get(sub))
        elif key == "model_config":
            model_config.update(value if isinstance(value, dict) else json.loads(value))
        elif key in known:
            changes[key] = _coerce(value, getattr(recipe, key))
        else:
            raise RecipeError(f"recipe has no field {key!r}; fields: {', '.join(sorted(known))}")
    try:
        return replace(recipe, **changes, model_config=model_config)
    except TypeError as error:  # a value of the wrong type that the checks above did not name
        raise RecipeError(f"bad recipe override: {error}") from error
