"""The package's layering (blink_jax/__init__.py): no module imports from a layer above its own."""

import ast
import pathlib

import blink_jax

ROOT = pathlib.Path(blink_jax.__file__).parent
LAYERS = {
    "sharding": 1, "config_lists": 1, "models": 2, "convert": 3, "data": 3, "blink": 4,
    "families": 5, "checkpoint": 5, "backbone": 6, "inference": 6,
    "train": 7, "eval": 7, "settings_record": 7, "aot": 8, "visualize_job": 8, "cli": 8, "testing": 9,
}


def _layer(module: str) -> int:
  return LAYERS[module.split(".")[1]]


def _imports(path: pathlib.Path):
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("blink_jax."):
      yield node.module
    elif isinstance(node, ast.ImportFrom) and node.module == "blink_jax":
      yield from (f"blink_jax.{a.name}" for a in node.names)
    elif isinstance(node, ast.Import):
      yield from (a.name for a in node.names if a.name.startswith("blink_jax."))


def test_no_module_imports_from_a_layer_above_it():
  modules = [p for p in ROOT.rglob("*.py") if p.name != "__init__.py" or p.parent != ROOT]
  assert {p.relative_to(ROOT).parts[0].removesuffix(".py") for p in modules} == set(LAYERS), "a module without a layer"
  upward = []
  for path in modules:
    own = "blink_jax." + ".".join(path.relative_to(ROOT).with_suffix("").parts)
    upward += [f"{own} -> {m}" for m in _imports(path) if _layer(m) > _layer(own)]
  assert not upward, upward
