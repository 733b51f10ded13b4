"""Data: image preprocessing, prompts, TFDS builders and grain pipelines."""
