"""The conversation templates the base models were trained and evaluated with: LLaVA-1.5's vicuna_v1
and Qwen2.5-VL's ChatML (its chat_template.json rendered for one image and one question)."""

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


QWEN_SYSTEM = "You are a helpful assistant."
QWEN_END_OF_TURN = "<|im_end|>"
QWEN_IMAGE_PLACEHOLDER = "<|image_pad|>"
QWEN_IMAGE_BLOCK = f"<|vision_start|>{QWEN_IMAGE_PLACEHOLDER}<|vision_end|>"   # one image in a prompt


def qwen_chat_prompt(question: str, system: str = QWEN_SYSTEM, with_image: bool = True) -> str:
  """Qwen2.5-VL's chat template for a user turn of one image then the question, with the assistant
  turn opened (add_generation_prompt): `<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n
  <|vision_start|><|image_pad|><|vision_end|>{question}<|im_end|>\n<|im_start|>assistant\n`."""
  image = QWEN_IMAGE_BLOCK if with_image else ""
  return (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{image}{question}<|im_end|>\n"
          "<|im_start|>assistant\n")


def qwen_chat_answer(answer: str) -> str:
  """The assistant turn that follows qwen_chat_prompt: `"{answer}<|im_end|>"` (the template opens the
  turn with "assistant\n", so no space before the answer)."""
  return f"{answer}{QWEN_END_OF_TURN}"
