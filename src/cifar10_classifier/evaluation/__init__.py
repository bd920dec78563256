"""Evaluation: metrics on the test split, the figures and the report a person reads. Needs torch."""
