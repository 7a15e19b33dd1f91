"""The import graph has layers and no upward imports (checked on the source, AST only).

core at the bottom; mesh and the chat client beside it; render, motion data and the HTML report blocks
above; the backend packages (models, rewards, vqvae, edit) above those, none importing another, and the
gold measures over them; the
command layer (r3d.commands: the library side of each command; and the asset-training programs) above them; the CLI
on top. A module may import its own package and any lower layer, never a higher one.
"""

import ast
from pathlib import Path

import r3d

ROOT = Path(r3d.__file__).resolve().parent

LAYERS = {
    "r3d.core": 0,
    "r3d.mesh": 1,
    "r3d.chat": 1,
    "r3d.render": 2,
    "r3d.motion": 3,
    "r3d.report": 4,
    "r3d.models": 5,
    "r3d.rewards": 5,
    "r3d.vqvae": 5,
    "r3d.edit": 5,
    "r3d.gold": 5.5,  # gold measures may reuse reward code (never the reverse)
    "r3d.commands": 6,
    "r3d.cli": 7,
    "r3d.__main__": 8,
}
COMMAND = 6
# Asset-training programs (``python -m r3d.models.train_tiny_shapes`` …) live beside the model they train
# but are programs: they may use the command layer's helpers.


def module_name(path: Path) -> str:
    return ".".join(("r3d", *path.relative_to(ROOT).with_suffix("").parts)).removesuffix(".__init__")


def unit(module: str) -> str:
    """The layered unit of a module: its package under r3d (or the top-level module itself)."""
    return ".".join(module.split(".")[:2])


def layer(module: str) -> int:
    asset_training = unit(module) != "r3d.cli" and module.rsplit(".", 1)[-1].startswith("train_")
    if asset_training:
        return COMMAND
    return LAYERS[unit(module)]


def imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("r3d."):
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("r3d.")]
    return found


def test_every_package_has_a_layer():
    units = {unit(module_name(p)) for p in ROOT.rglob("*.py")} - {"r3d"}
    assert units <= set(LAYERS), sorted(units - set(LAYERS))


def test_nothing_imports_upward_or_sideways_between_backends():
    """No module imports a higher layer, or another package of its own layer (models ↔ rewards once
    imported each other, rewards imported bench-edit's chat client, motion imported the runner)."""
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        source = module_name(path)
        for target in imports(path):
            same_unit = unit(target) == unit(source)
            if same_unit and layer(source) != COMMAND:
                continue
            if layer(target) > layer(source) or (
                not same_unit and layer(target) == layer(source) and layer(source) != COMMAND
            ):
                bad.append(f"{source} (layer {layer(source)}) imports {target} (layer {layer(target)})")
    assert not bad, "\n".join(bad)


def test_core_imports_no_backend():
    """r3d.core imports only r3d.core (and the standard library / third-party packages)."""
    for path in (ROOT / "core").rglob("*.py"):
        assert all(t.startswith("r3d.core") for t in imports(path)), path
