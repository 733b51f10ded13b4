"""Experiments run end to end with the project's own jobs (each one command, its results page written by it)."""
