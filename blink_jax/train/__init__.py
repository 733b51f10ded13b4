"""TokenSR distillation training: state, step, loop."""
