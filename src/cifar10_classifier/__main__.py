"""`python -m cifar10_classifier ...` is the same as the `cifar10` command (torchrun uses this form)."""

from cifar10_classifier.cli import main

raise SystemExit(main())
