"""What `cifar10 train --resume` continues: the run folder's own recipe, seed and data, from its config.json.

A resumed run must be the run that is in the folder, so a flag that contradicts it is refused in one line,
except the fields in RESUMABLE_FIELDS, which change how long or how fast it trains, not what it learns up to
where it stopped. Torch-free: the CLI decides this before any process (or torchrun) starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cifar10_classifier.errors import UserError
from cifar10_classifier.runs import RunFolder, RunFolderError
from cifar10_classifier.training.recipes import Recipe, RecipeError, apply_overrides, resolve_recipe

# Safe to change on resume, with why: more epochs extend the run (a linear schedule is re-stretched over the new
# total from the next step on); threads only change speed.
RESUMABLE_FIELDS = ("epochs", "threads")


class ResumeError(UserError):
    """A flag given with --resume contradicts the run in the folder; the message names the field and both values."""


@dataclass(frozen=True)
class TrainedData:
    """The data a run trained on, as its config.json records it: whatever is loaded on resume must match."""

    source: str
    sha256: str
    given: bool = False  # --data was given on resume (else the run's own source is loaded)

    def unloadable(self, error: Exception) -> ResumeError:
        return ResumeError(
            f"--resume: the run's data {self.source} cannot be loaded ({error}); pass --data with the same "
            f"dataset (sha256 {self.sha256[:12]}...)"
        )

    def check(self, source: str, sha256: str) -> None:
        if sha256 == self.sha256:
            return
        if not self.given:
            raise ResumeError(
                f"--resume: the run's data {source} has changed since the run started (sha256 {sha256[:12]}..., "
                f"the run's {self.sha256[:12]}...); pass --data with the dataset the run trained on"
            )
        raise ResumeError(
            f"--resume: --data {source} (sha256 {sha256[:12]}...) is not the dataset this run trained on, "
            f"{self.source} (sha256 {self.sha256[:12]}...); pass that one, or drop --data to use it"
        )


@dataclass(frozen=True)
class TrainingPlan:
    """What `cifar10 train` trains: a recipe on a data source; on resume, the data that source must match."""

    recipe: Recipe
    data: str | None  # the source to load: the one given, or the resumed run's own
    trained_data: TrainedData | None = None  # None for a new run, or an older one without a config
    changed: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # on resume: field -> (run's, new value)
    skip_bad_images: bool = False  # on resume: the run's own choice


def plan_new_run(
    recipe_name: str | None, overrides: dict[str, Any], data: str | None, skip_bad_images: bool = False
) -> TrainingPlan:
    """A run from the flags alone: the named recipe (default fast) with its overrides."""
    return TrainingPlan(resolve_recipe(recipe_name or "fast", overrides), data, skip_bad_images=skip_bad_images)


def plan_resume(
    run: RunFolder,
    *,
    recipe_name: str | None,
    overrides: dict[str, Any],
    data: str | None,
    skip_bad_images: bool = False,
) -> TrainingPlan:
    """The run's recipe with the allowed `overrides`, and the data to load; raises ResumeError on a contradiction.

    A folder without config.json (an older run) resumes from the flags as given, as it did before.
    """
    if not run.checkpoint.is_file():
        raise run.nothing_to_resume()
    config = run.read_config()
    if config is None:
        return plan_new_run(recipe_name, overrides, data, skip_bad_images)
    try:
        trained = Recipe.from_dict(config["recipe"])
    except (KeyError, TypeError, RecipeError) as error:
        raise RunFolderError(
            f"{run.config}: its recipe cannot be read ({error}); repair the file or train into a new --out"
        ) from error
    if recipe_name is not None and recipe_name != trained.name:
        raise ResumeError(
            f"--resume: {run.path} is a {trained.name} run, not {recipe_name}; "
            f"drop --recipe to continue it, or train {recipe_name} into another --out"
        )
    given = apply_overrides(trained, overrides)
    before, after = trained.flat_fields(), given.flat_fields()
    changed = {key: (before.get(key), after[key]) for key in after if after[key] != before.get(key)}
    refused = {key: values for key, values in changed.items() if key not in RESUMABLE_FIELDS}
    if refused:
        contradictions = "; ".join(f"{key} is {old!r} in the run, {new!r} given" for key, (old, new) in refused.items())
        raise ResumeError(
            f"--resume: {contradictions}; drop it to continue {run.path} "
            f"(only {', '.join(RESUMABLE_FIELDS)} may change on resume), or train into another --out"
        )
    completed = len(run.read_history())
    if given.epochs < completed:
        raise ResumeError(
            f"--resume: epochs={given.epochs} is fewer than the {completed} epochs {run.path} has completed"
        )
    run_data = config.get("data") or {}
    # `path` is absolute (runs since it was recorded); `source` is as the user typed it.
    own_source = run_data.get("path") or run_data.get("source")
    run_skips = bool(run_data.get("skip_bad_images", False))
    if skip_bad_images and not run_skips:
        # Skipping changes the training arrays (and so the split) under the same checksum.
        raise ResumeError(f"--resume: --skip-bad-images was off in {run.path}, given now; drop it to continue the run")
    trained_data = None
    if own_source and "sha256" in run_data:
        trained_data = TrainedData(str(own_source), str(run_data["sha256"]), given=data is not None)
    if data is None and trained_data is not None:
        data = trained_data.source  # TrainedData.unloadable() explains it if it is gone
    return TrainingPlan(given, data, trained_data, changed, skip_bad_images=run_skips or skip_bad_images)
