"""Give another virtualenv this Python's torch pair as hard links, before pip runs there.

The pinned torch pair is a CUDA build of about 5.5 GB on x86_64. The test runner and each real
ComfyUI server hold their own virtualenv, so three copies of it once filled a CI machine's disk
while two of them were unpacked at once. Linking the files of torch, torchvision and the packages
torch requires (CUDA libraries, triton) costs no disk and no unpacking; pip in the target then
finds them installed, installs the small rest, and is free to replace any of them (it unlinks,
never writes into a file).

    python scripts/link-torch.py TARGET_PYTHON

Links nothing, and says why, unless this Python has exactly the pinned pair and the target is the
same Python version on the same filesystem.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from pip._vendor.packaging.requirements import Requirement  # pip is in every virtualenv; packaging may not be

PINNED = {"torch": "2.14.1", "torchvision": "0.29.1"}


def _installed(name: str) -> metadata.Distribution | None:
    try:
        return metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None


def distributions_to_link() -> list[metadata.Distribution]:
    """The pinned pair and every package they require, at any depth, that this Python has."""
    found = []
    for name, version in PINNED.items():
        dist = _installed(name)
        if dist is None or dist.version.split("+")[0] != version:
            raise LookupError(f"this Python has {name} {dist.version if dist else 'missing'}, not {version}")
        found.append(dist)
    names = {_normal(d.metadata["Name"]) for d in found}
    queue = [(dist, {""}) for dist in found]
    while queue:  # what their requirements require, too, with the extras asked for (cuda-toolkit's libraries)
        dist, extras = queue.pop()
        for line in dist.requires or []:
            requirement = Requirement(line)
            marker = requirement.marker
            if marker is not None and not any(marker.evaluate({"extra": extra}) for extra in extras):
                continue  # an extra nobody asked for, or another platform's: not what pip installs for the pair
            name = _normal(requirement.name)
            required = _installed(name) if name not in names else None
            if required is not None:
                names.add(name)
                found.append(required)
                queue.append((required, {""} | set(requirement.extras)))
    return found


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _site_packages(python: str) -> tuple[Path, str]:
    code = "import sys, sysconfig; print(sysconfig.get_paths()['purelib']); print(sys.version_info[:2])"
    lines = subprocess.run([python, "-c", code], check=True, capture_output=True, text=True).stdout.splitlines()
    return Path(lines[0]), lines[1]


def link(dists: list[metadata.Distribution], target: Path) -> int:
    """Hard-link each distribution's files under site-packages into target; returns the bytes linked."""
    linked = 0
    for dist in dists:
        root = Path(dist.locate_file("")).resolve()
        for relative in dist.files or []:
            source = Path(dist.locate_file(relative)).resolve()
            if not source.is_file() or root not in source.parents:
                continue  # console scripts in bin/ name this Python; pip in the target needs none of them
            destination = target / source.relative_to(root)
            destination.parent.mkdir(parents=True, exist_ok=True)
            if destination.exists():
                destination.unlink()
            os.link(source, destination)
            linked += source.stat().st_size
    return linked


def main() -> int:
    target_python = sys.argv[1]
    try:
        dists = distributions_to_link()
    except LookupError as why:
        print(f"link-torch: nothing linked ({why}); pip installs the target's own copy")
        return 0
    target, version = _site_packages(target_python)
    here = str(sys.version_info[:2])
    if version != here:
        print(f"link-torch: nothing linked (the target is Python {version}, this is {here}); pip installs its own copy")
        return 0
    try:
        size = link(dists, target)
    except OSError as why:  # another filesystem, or links not allowed: pip replaces what was linked
        print(f"link-torch: linking stopped ({why}); pip installs the target's own copy")
        for dist in dists:  # without its dist-info, pip sees no install to keep
            for folder in {f.parts[0] for f in dist.files or [] if f.parts[0].endswith(".dist-info")}:
                shutil.rmtree(target / folder, ignore_errors=True)
        return 0
    names = ", ".join(f"{d.metadata['Name']} {d.version}" for d in dists)
    print(f"link-torch: {size / 2**30:.1f} GiB linked into {target}: {names}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
