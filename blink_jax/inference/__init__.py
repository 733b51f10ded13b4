"""Inference: the user-facing API (pipeline.Pipeline), greedy generation with a static KV cache
(generate.py) and continuation scoring (loglikelihood.py), in every mode."""
