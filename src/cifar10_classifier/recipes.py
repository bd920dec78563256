"""Named training recipes as typed configs. Every field can be overridden from the CLI or a config file,
and the resolved recipe is written beside the run's results."""

from __future__ import annotations

import ast
import json
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

# Images per forward pass when evaluating, unless a recipe says otherwise (the fast recipes use 100 on CPU).
DEFAULT_EVAL_BATCH_SIZE = 500


@dataclass(frozen=True)
class Recipe:
    name: str
    model: str
    model_config: dict = field(default_factory=dict)
    # Schedule and optimisation
    epochs: int = 10  # the maximum when early stopping is on
    batch_size: int = 256
    optimizer: str = "sgd-nesterov"  # "adam", or "muon": Muon for conv filters, Nesterov SGD for the rest
    lr: float = 1e-3  # per-sample learning rate when loss_reduction == "sum", else the usual step size
    momentum: float = 0.9
    weight_decay: float = 0.0  # per sample and decoupled from lr when loss_reduction == "sum" (build_optimizer)
    muon_lr: float = 0.0  # with optimizer "muon": each filter bank's step size relative to its (fixed) norm
    muon_momentum: float = 0.6
    bias_lr_scale: float = 1.0  # BN shifts learn this much faster (airbench: 64), with wd divided by it
    loss_reduction: str = "mean"  # "sum" makes lr a per-sample rate that is independent of the batch size
    label_smoothing: float = 0.0
    label_format: str = "index"  # or "one-hot" (Keras' categorical cross-entropy); the same loss either way
    schedule: str = "constant"  # "constant", "linear" (warmup then linear decay) or "plateau"
    warmup_fraction: float = 0.0
    lr_start: float = 1.0  # multipliers of lr at step 0, at the end of warmup (1.0) and at the last step
    lr_end: float = 1.0
    plateau_patience: int = 3
    plateau_factor: float = 0.5
    # Data and augmentation
    val_fraction: float = 0.2
    flip: str = "random"  # "none", "random" or "alternating"
    translate: int = 0  # pixels, reflect-padded
    # The first crop_epochs epochs train on random crop_size x crop_size windows: fewer pixels make those epochs
    # cheaper, and the nets end in a global pool, so they take any size. Evaluation always sees whole images.
    crop_size: int = 32
    crop_epochs: int = 0
    # Or one size per epoch for the first len(crop_sizes) epochs (e.g. [20, 24]: a growing window); when set it
    # replaces crop_size and crop_epochs. An epoch's cost falls with its pixels (20x20 costs ~0.37 of 32x32
    # here), but windows of 16 px cut too much of each object to pay (see the fast recipe's notes).
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
    # Machine
    bf16: str = "auto"  # "auto" uses bf16 autocast only where the CPU has native bf16 (AVX512-BF16/AMX) or CUDA
    channels_last: bool = True
    threads: int = 0  # 0: all cores
    sync_batchnorm: bool = False  # for distributed runs
    seed: int = 0
    whiten_images: int = 5000  # images used to initialise a whitening layer, if the model has one
    whiten_bias_epochs: int = 0  # the whitening layer's bias trains this many epochs, then freezes (0: always)
    # Lookahead (airbench): every `lookahead_samples` samples the weights are pulled towards, and reset to, an
    # average of their recent values, more strongly as training ends; the average is the final model. 0: off.
    lookahead_samples: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    def crop_size_for_epoch(self, epoch: int) -> int:
        """The training window of a 1-based epoch (32: whole images)."""
        if self.crop_sizes:
            return self.crop_sizes[epoch - 1] if epoch <= len(self.crop_sizes) else 32
        return self.crop_size if epoch <= self.crop_epochs else 32


RECIPES: dict[str, Recipe] = {
    # The Keras-tutorial recipe, faithful: affine augmentation, Adam + cross-entropy, 20% validation,
    # early stopping on validation loss with patience 10 restoring the best weights.
    # One addition for a CPU time budget: Adam's step size decays linearly to 5% over at most 20 epochs, which
    # reaches in 20 epochs what the constant-rate original reached in ~40 (early stopping still decides).
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
    # The fast default: airbench's net, schedule and tricks, sized for a 2-core AVX2 CPU and what it makes cheap.
    # Measured here (bench/results/train_speed.md and the closing notes):
    # - the full airbench widths (64, 256, 256) fit only 3 epochs in 15 minutes; narrower blocks and more epochs
    #   win, and batch 128 gives 390 optimizer steps an epoch at the same images/s as a large batch;
    # - Muon on the conv filters: 85.0% against 83.5% with Nesterov SGD on fast-small (3 epochs); with it and
    #   the eps below, this recipe went from 86.4% to 88.0%;
    # - whiten_eps 5e-3 (not airbench's 5e-4): the shared images are JPEGs whose finest colour detail is mostly
    #   compression noise, which a small eps amplifies ~45x;
    # - the first epochs on 24x24 crops cost ~0.58 of an epoch each (655 vs 380 img/s); one crop epoch measured
    #   87.91% against 87.99% without, within seed noise;
    # - wider blocks paid for by cheaper crop epochs (first two on 20x20, then 24x24; a 20px epoch costs ~0.37 of
    #   a full one) did not win on the bench: 64-144-144 scored 88.15% / 87.55% (seeds 0 / 1, mean 87.85%) in
    #   736 / 807 s, against this recipe's 87.98% mean in 724 s (last stop's bench). 64-160-160 scored 88.59% at
    #   seed 0 but took 942 s with its evaluation on a slow afternoon of this shared CPU. 64-192-192 in 5 epochs
    #   (16, 24, then 32) fell to 87.06%; 16x16 crops cut too much of each object (on fast-small, two 16px epochs
    #   in front lost 0.8 points).
    "fast": Recipe(
        name="fast",
        model="fast-net",
        # ReLU, not airbench's GELU: it fuses into the int8 convs, and GELU on fast-small scored 84.51% (vs 84.68%)
        # with slower steps.
        model_config={"widths": [64, 128, 128], "whiten_eps": 5e-3},
        epochs=6,
        batch_size=128,
        optimizer="muon",
        muon_lr=0.03,  # tuned on fast-small: 0.02 / 0.03 / 0.05 / 0.1 gave 84.1 / 85.0 / 84.7 / 83.1%
        muon_momentum=0.8,  # 0.9 gave 84.6%
        lr=11.5 / (1024 * (1 + 1 / (1 - 0.85))),  # airbench's rate per sample (summed loss): head and BN shifts
        momentum=0.85,
        weight_decay=0.0153 / (1024 * (1 + 1 / (1 - 0.85))),  # per sample: airbench's 0.0153 at batch 1024
        bias_lr_scale=64.0,
        loss_reduction="sum",
        label_smoothing=0.2,  # on fast-small (seed 0): 0.1 gave 84.35%, 0.3 gave 84.20%, against 84.68%
        schedule="linear",
        warmup_fraction=0.2,
        lr_start=0.2,
        lr_end=0.07,
        val_fraction=0.0,  # no model selection happens, so every training image trains (as airbench does)
        flip="alternating",
        translate=2,
        # Photos: the bundled model scored 1.3 points lower on test images sent as 256x256 photos than on the tiles
        # (the box downscale's round trip is a [0.09, 0.84, 0.09] blur). With half of each batch softened,
        # fast-small (seed 0) kept its tile accuracy (84.7% vs 84.4%) and lost 0.3-1.0 points on photos.
        blur_probability=0.5,
        blur_strength=0.2,
        crop_size=24,
        crop_epochs=2,
        # The whitening bias trains in the first epoch only (airbench: 3 of ~10). After it, no step computes the
        # first block's input gradient: 5-7% off each step. fast-small: 84.64% against 84.68% training it always;
        # fast on the 2-seed bench: 87.86% (87.97 / 87.75) against 87.98% (88.09 / 87.86), within seed noise,
        # in 777 / 860 s on a slow hour (last bench: 885 / 891 s). More TTA views (4 diagonal or 8 neighbouring
        # shifts, each mirrored) scored no better than these 6 on two fast models.
        whiten_bias_epochs=1,
        tta_level=2,
        # The 6-view TTA evaluation of the test split is part of the timed budget: on this CPU batches of 100 run
        # 1,559 view-images/s against 989 at 500 (they stay in cache), the same logits either way.
        eval_batch_size=100,
    ),
}
# Five minutes on the same CPU: narrower, 3 epochs, the first on 24x24 crops. With 3 epochs the full-size ones
# matter most: widths 32-160-160 with a 20px first epoch scored the same (84.76% vs 84.68%) in 53 s more, and
# 64-128-128 on 16px then 24px crops fell to 82.73%. Ceil-mode pooling (a patch, not kept: the 31x31 maps then
# keep their last row and column, 31 -> 16 -> 8 -> 4) scored 84.86% for ~18% more FLOPs, and 84.70% at widths
# 32-112-112, which cost what this recipe does. Progressive resizing (a patch, not kept: whole images box-downscaled
# to 16x16 in the first epochs, 1,600-2,000 img/s) lost more than it saved: one 16px epoch instead of the 24px crop
# epoch, 83.88% in 239 s of training; two 16px epochs then two full ones, 84.18% in 286 s; against 84.64% in 307 s.
RECIPES["fast-small"] = replace(
    RECIPES["fast"],
    name="fast-small",
    model_config={"widths": [32, 128, 128], "whiten_eps": 5e-3},
    epochs=3,
    crop_epochs=1,
)
# airbench's compute with this recipe's plan: its widths (64, 256, 256) and 8 epochs, ~2.2x the FLOPs of `fast` per
# epoch. For when accuracy matters more than minutes: a GPU, or the bundled model, which is trained once. Here
# (bench/results/train_speed_large.md, seeds 0 / 1): 90.24 / 90.21% with TTA (89.18 / 89.40% without) in
# 2,543 / 2,273 s: the airbench port took 17.5 min for 90.7% on the machine its targets were set on.
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
        raise KeyError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}")
    recipe = RECIPES[name]
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
            raise KeyError(f"recipe has no field {key!r}; fields: {', '.join(sorted(known))}")
    return replace(recipe, **changes, model_config=model_config)
