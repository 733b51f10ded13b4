"""Benchmarks: readers, prompts and official scorers."""
