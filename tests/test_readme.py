"""The README's first commands and its Python example work as written, on random weights in the real formats."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
FIRST = next(line for line in README.splitlines() if line.startswith("`python3 -m venv"))  # install and run, one line


def test_the_readme_s_inputs_ship_with_the_repository():
    """Its commands segment and track files that are in the repository, with their credit."""
    for name in ("examples/bunny.jpg", "examples/bunny.mp4"):
        assert name in README and (ROOT / name).is_file(), name
    assert "Big Buck Bunny" in README and "CC BY" in README
    assert README.index(FIRST) < 600 and "grounded-sam segment examples/bunny.jpg" in FIRST  # among the first lines
    assert len(README.splitlines()) <= 250


def test_the_readme_s_links_lead_to_files():
    import re

    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
            if not target.startswith("http"):
                assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links to {target}"


@pytest.mark.system  # the Python example end to end: two models, an image and a 3-frame clip
def test_the_readme_s_python_example_runs(dino_checkpoint, sam_checkpoint, sam2_video_folder_512, tmp_path):
    import av

    example = README.split("```python")[1].split("```")[0]
    clip = tmp_path / "bunny.mp4"  # the example clip's first 3 frames: what is checked is the call, not the length
    with av.open(str(ROOT / "examples" / "bunny.mp4")) as source, av.open(str(clip), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        for index, frame in enumerate(source.decode(video=0)):
            if index == 3:
                break
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")))
        out.mux(stream.encode())
    swaps = {
        '"models/grounding-dino/groundingdino_swint_ogc.pth"': repr(str(dino_checkpoint)),
        '"models/sams/sam_vit_b_01ec64.pth"': repr(str(sam_checkpoint)),
        '"models/sams/sam2.1_hiera_tiny.pt"': repr(str(sam2_video_folder_512)),
        '"examples/bunny.jpg"': repr(str(ROOT / "examples" / "bunny.jpg")),
        '"examples/bunny.mp4"': repr(str(clip)),
    }
    for old, new in swaps.items():
        assert old in example, old
        example = example.replace(old, new)
    run = subprocess.run([sys.executable, "-c", example], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 1 + 3, run.stdout  # the image's objects, then one line per frame


def test_the_readme_s_first_command_says_what_to_do_offline(tmp_path):
    """Without the network and without the files, the first command stops before any model loads and says how to
    get them (``--no-download`` stands for a machine without the network)."""
    import shlex

    args = shlex.split(FIRST.split("pip install . && ")[1].rstrip("`"))
    assert args[:3] == ["grounded-sam", "segment", "examples/bunny.jpg"]
    run = subprocess.run([sys.executable, "-m", "grounded_sam.cli", *args[1:], "--models-dir", str(tmp_path / "models"),
                          "--no-download"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 2, run.stderr
    assert "groundingdino_swint_ogc.pth" in run.stderr, run.stderr
