"""Draws Blink's decisions for one image and question into a PNG.

  python visualize.py --checkpoint /ckpts/llava-1.5-7b-hf --image cat.jpg \
      --question "What colour is the cat's collar?" --out blink.png [--token_sr runs/tokensr_7b/export]

Without --token_sr, Blink's settings are the spec's carried to the checkpoint's depth and grid
(blink.config.defaults_for); --blink overrides any of them. With no flags: the embedded default's
random model (Pipeline.from_preset) with the TokenSR train.py's default job exported (when that run
exists), on a sample photograph: a try-out with no download (the answers are noise).
"""

from absl import flags


def define_flags(fv: flags.FlagValues = flags.FLAGS):
  """visualize.py's flags (the README-commands test parses the README's line with these)."""
  flags.DEFINE_string("checkpoint", "", "Hugging Face LLaVA-1.5 or Qwen2.5-VL checkpoint directory; empty: "
                      "the embedded default's random model.", flag_values=fv)
  flags.DEFINE_string("image", "", "Image file; empty: a sample photograph (scikit-image's cat).", flag_values=fv)
  flags.DEFINE_string("question", "", "Question about the image (needed with --image).", flag_values=fv)
  flags.DEFINE_string("out", "blink.png", "Output PNG.", flag_values=fv)
  flags.DEFINE_string("token_sr", None, "Trained TokenSR export directory (train.py's export/); without it, "
                      "'tokensr' is left out of the comparison (the embedded model: runs/tokensr/export if it "
                      "exists).", flag_values=fv)
  flags.DEFINE_list("modes", ["vanilla", "interp", "tokensr"], "Modes whose answers are shown.", flag_values=fv)
  flags.DEFINE_integer("max_new_tokens", 32, "Answer length limit.", flag_values=fv)
  flags.DEFINE_string("dtype", "float32", "Compute dtype.", flag_values=fv)
  flags.DEFINE_list("blink", [], "Blink overrides as key=value, e.g. tau_exp=0.1,max_regions=2.", flag_values=fv)


def main(_):
  f = flags.FLAGS
  from blink_jax.visualize_job import run
  run(checkpoint=f.checkpoint, image=f.image, question=f.question, out=f.out, token_sr=f.token_sr, modes=f.modes,
      max_new_tokens=f.max_new_tokens, dtype=f.dtype, blink_overrides=f.blink)


if __name__ == "__main__":
  from blink_jax import cli
  cli.run(main, define_flags)
