"""ml_collections configs for train.py and eval.py."""
