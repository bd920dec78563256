"""Training: recipes, the loop, optimizers, augmentation, checkpoints, distributed runs. Needs torch, except
`recipes`, which is stdlib-only so that the CLI can list recipes without importing torch."""
