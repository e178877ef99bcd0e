"""Evaluation: metrics and the evaluation job.

job.py (checkpoints -> videos -> metrics -> TensorBoard + JSON, resumable; CLI in __main__.py),
generators.py (the sampling job as video generator), prompts.py / ucf101.py (prompt sets, the zero-shot
UCF101 protocol), metrics.py (FVD, IS, CLIPSIM, synthetic quality), frechet.py / inception_score.py (the
statistics), i3d.py / c3d.py / clip.py + clip_tokenizer.py (metric networks in Flax), weights.py / convert.py /
networks.py (converted weights files, converters from the public checkpoints, ready-to-run networks),
synthetic_quality.py + caption_parser.py (synthetic-domain quality score).
"""
