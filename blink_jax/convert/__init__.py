"""Checkpoint conversion: Hugging Face safetensors -> Flax params."""
