"""Draws Blink's decisions for one image and question into a PNG.

  python visualize.py --checkpoint /ckpts/llava-1.5-7b-hf --image cat.jpg \
      --question "What colour is the cat's collar?" --out blink.png [--token_sr runs/tokensr_7b/export]

Without --token_sr, Blink's settings are the spec's carried to the checkpoint's depth and grid
(blink.config.defaults_for); --blink overrides any of them.
"""

from absl import app, flags, logging

flags.DEFINE_string("checkpoint", None, "Hugging Face LLaVA checkpoint directory.", required=True)
flags.DEFINE_string("image", None, "Image file.", required=True)
flags.DEFINE_string("question", None, "Question about the image.", required=True)
flags.DEFINE_string("out", "blink.png", "Output PNG.")
flags.DEFINE_string("token_sr", None, "Trained TokenSR export directory (train.py's export/); "
                    "without it, 'tokensr' is left out of the comparison.")
flags.DEFINE_list("modes", ["vanilla", "interp", "tokensr"], "Modes whose answers are shown.")
flags.DEFINE_integer("max_new_tokens", 32, "Answer length limit.")
flags.DEFINE_string("dtype", "float32", "Compute dtype.")
flags.DEFINE_list("blink", [], "Blink overrides as key=value, e.g. tau_exp=0.1,max_regions=2.")
FLAGS = flags.FLAGS


def main(_):
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # backend INFO lines, as train.py and eval.py
  from blink_jax.visualize_job import run
  run(checkpoint=FLAGS.checkpoint, image=FLAGS.image, question=FLAGS.question, out=FLAGS.out,
      token_sr=FLAGS.token_sr, modes=FLAGS.modes, max_new_tokens=FLAGS.max_new_tokens,
      dtype=FLAGS.dtype, blink_overrides=FLAGS.blink)


if __name__ == "__main__":
  app.run(main)
