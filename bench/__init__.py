"""Benchmarks (not tests): each script prints a table and writes json + a PNG under bench/results/."""
