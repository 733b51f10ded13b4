"""blink-jax: Blink (dynamic visual token resolution) for LLaVA-1.5 in JAX/Flax."""
