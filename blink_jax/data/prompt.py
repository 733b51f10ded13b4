"""The vicuna_v1 conversation template LLaVA-1.5 was trained and evaluated with."""

SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the user's questions.")
IMAGE_PLACEHOLDER = "<image>"


def vicuna_v1_prompt(question: str, system: str = SYSTEM, with_image: bool = True) -> str:
  """`"{system} USER: <image>\\n{question} ASSISTANT:"` (LLaVA's conv_vicuna_v1, sep " ")."""
  user = f"{IMAGE_PLACEHOLDER}\n{question}" if with_image else question
  return f"{system} USER: {user} ASSISTANT:"


def vicuna_v1_answer(answer: str) -> str:
  """The assistant turn that follows vicuna_v1_prompt: `" {answer}</s>"` (conv_vicuna_v1's sep2 ends it)."""
  return f" {answer}</s>"
