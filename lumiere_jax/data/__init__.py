"""Datasets (tfds builders), seqio tasks, feature conversion and the global input pipeline."""
