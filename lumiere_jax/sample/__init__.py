"""Sampling jobs and the paper's applications."""
