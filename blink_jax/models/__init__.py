"""Flax modules: the CLIP vision tower, the Llama decoder, their LLaVA composition, TokenSR."""
