"""blink-jax: Blink (dynamic visual token resolution) for LLaVA-1.5 and Qwen2.5-VL in JAX/Flax.

The package is layered; a module imports only from its own layer or those below it
(tests/test_layers.py checks it):

  1. sharding.py, config_lists.py                   meshes and shardings, config helpers
  2. models/                                        the networks and their configs
  3. convert/, data/                                checkpoints into params; images, prompts, tokens
  4. blink/                                         the method on top of a model
  5. families.py, checkpoint.py                     one family's pieces together; TokenSR exports
  6. backbone.py, inference/                        the model a job names; the inference API
  7. train/, eval/, settings_record.py              the jobs; how a resumed job compares its settings
  8. aot.py, visualize_job.py, cli.py               tools over the jobs: TPU sizing, the picture,
                                                    the command lines
  9. testing.py                                     random checkpoints for tests and bench/ (torch)
"""
