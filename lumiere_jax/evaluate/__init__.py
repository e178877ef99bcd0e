"""Evaluation: metrics and the evaluation job."""
