"""The house's one rule, read from the code's own imports: a module imports only from its own layer or below.

docs/architecture.md draws the layers; this list is the same map, bottom first. Every entry of the package's top
level must be in it, so a new module or wing is placed on purpose.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "grounded_sam"

LAYERS: list[tuple[str, set[str]]] = [
    ("base records and rules", {"errors", "records", "settings", "prompts", "clicks", "stages"}),
    ("how models run, where weights live", {"runtime", "model_files"}),
    ("which objects a run keeps", {"selection"}),
    ("model families", {"dino", "sam", "sam3", "matting"}),
    ("images in and results out, the loaders' front", {"media", "recognise", "loaders"}),
    ("images and clips", {"detection_step", "click_refinement", "pipeline", "video"}),
    ("hosts", {"cli", "comfy", "labeling", "__init__"}),
]
LAYER_OF = {entry: level for level, (_, entries) in enumerate(LAYERS) for entry in entries}


def top_entry(path: Path) -> str:
    """The package's top-level entry a source file belongs to ("runtime" for runtime/devices.py)."""
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def imported_entries(path: Path, text: str | None = None) -> set[str]:
    """The top-level entries of grounded_sam that the source at ``path`` (or ``text``, read as if it stood there)
    imports: relative or absolute, lazy ones too."""
    inside = path.relative_to(PACKAGE).parent.parts  # the package path of the file, below grounded_sam
    found = set()
    for node in ast.walk(ast.parse(path.read_text() if text is None else text)):
        targets: list[list[str]] = []
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(inside[: len(inside) - (node.level - 1)]) if node.level > 1 else list(inside)
            module = [*base, *(node.module.split(".") if node.module else [])]
            targets = [module] if module else [[alias.name] for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("grounded_sam"):
            module = node.module.split(".")[1:]
            targets = [module] if module else [[alias.name] for alias in node.names]
        elif isinstance(node, ast.Import):
            targets = [alias.name.split(".")[1:] for alias in node.names if alias.name.startswith("grounded_sam.")]
        found |= {target[0] for target in targets if target}
    return found


def test_every_top_level_module_and_wing_has_a_layer():
    entries = {p.name.removesuffix(".py") for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    assert entries - set(LAYER_OF) == set(), "place these in LAYERS (and docs/architecture.md)"
    assert set(LAYER_OF) - entries == set(), "LAYERS names entries the package no longer has"


def test_no_module_imports_one_from_a_higher_layer():
    upward = []
    for source in sorted(PACKAGE.rglob("*.py")):
        own = top_entry(source)
        for entry in imported_entries(source):
            if entry in LAYER_OF and LAYER_OF[entry] > LAYER_OF[own]:
                upward.append(f"{source.relative_to(PACKAGE)} ({LAYERS[LAYER_OF[own]][0]}) imports {entry} ({LAYERS[LAYER_OF[entry]][0]})")
    assert not upward, "imports that point up:\n" + "\n".join(upward)


def test_the_import_reader_sees_an_import_that_points_up():
    """The check above can fail: runtime/devices.py with a lazy import of the pipeline and one of video/ is reported."""
    source = PACKAGE / "runtime" / "devices.py"
    assert imported_entries(source) <= {"errors"}
    planted = source.read_text() + "\n\ndef _late():\n    from ..pipeline import GroundedSam\n    from grounded_sam.video import tracker\n"
    assert imported_entries(source, planted) == {"errors", "pipeline", "video"}
