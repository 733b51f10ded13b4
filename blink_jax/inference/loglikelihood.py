"""Log-likelihood of a given continuation after a prompt: the summed log-probability of its tokens and
whether greedy decoding would have produced it (lmms-eval's `loglikelihood`, V* Bench's option scoring).

The prompt runs through the mode's own prefill (vanilla, or Blink deciding from the prompt alone, as in
generation) with room for the continuation in its KV cache; the continuation is then fed token by token
through the same decoding step generation uses, so a continuation is scored against exactly the cache
generation would decode against. Continuations are right-padded to a length bucket (static shapes);
`counts` gives each one's true length.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from blink_jax.inference.generate import PrefillFn, decode_step, first_positions
from blink_jax.models.vision_language import VisionLanguageModel

CONTINUATION_BUCKETS = (8, 16, 32, 64, 128, 256, 512)


class Scores(NamedTuple):
  logprob: jax.Array      # [B] float32: summed log-probability of the continuation's tokens
  greedy: jax.Array       # [B] bool: every continuation token is the arg-max at its position
  length: jax.Array       # [B] int32: the continuation's tokens
  expansions: jax.Array   # [B] int32: regions Blink expanded in the prefill (0 for vanilla)


def pad_continuations(continuations: Sequence[Sequence[int]], pad_id: int,
                      buckets: Sequence[int] = CONTINUATION_BUCKETS) -> tuple[np.ndarray, np.ndarray]:
  """(token ids [B, C] right-padded to a bucket, true lengths [B]); every continuation needs a token."""
  counts = np.asarray([len(c) for c in continuations], np.int32)
  if counts.min(initial=1) < 1:
    raise ValueError("a continuation to score has no tokens")
  fitting = [b for b in buckets if b >= counts.max()]
  if not fitting:
    raise ValueError(f"a continuation of {counts.max()} tokens is longer than the largest bucket {max(buckets)}")
  tokens = np.full((len(continuations), fitting[0]), pad_id, np.int32)
  for i, c in enumerate(continuations):
    tokens[i, :len(c)] = c
  return tokens, counts


def score_continuations(model: VisionLanguageModel, prefill: PrefillFn, params, ids, pixels, lengths, tokens, counts,
                        extra=None) -> Scores:
  """Scores of continuations `tokens` [B, C] (true lengths `counts` [B]) after the prompts; `extra`:
  the prefill's (generate.PrefillFn)."""
  c = tokens.shape[1]
  logits, cache, valid, expansions = prefill(params, ids, pixels, lengths, c, extra)
  s0 = cache.length - c
  start = first_positions(model, params, ids, pixels, lengths)

  def token_score(logits, t):
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    tok, live = tokens[:, t], t < counts
    picked = jnp.take_along_axis(logp, tok[:, None], axis=1)[:, 0]
    return jnp.where(live, picked, 0.0), jnp.where(live, jnp.argmax(logits, axis=-1) == tok, True)

  logprob, greedy = token_score(logits, 0)

  def body(state):
    t, logprob, greedy, cache, valid = state
    logits, cache, valid = decode_step(model, params, tokens[:, t - 1], t, s0, start, cache, valid)
    lp, g = token_score(logits, t)
    return t + 1, logprob + lp, greedy & g, cache, valid

  state = (jnp.int32(1), logprob, greedy, cache, valid)
  _, logprob, greedy, _, _ = jax.lax.while_loop(lambda s: s[0] < jnp.max(counts), body, state)
  return Scores(logprob, greedy, counts, expansions)
