"""Run once after ``pip install -r requirements.txt``; ComfyUI-Manager runs it after installing the pack.

PyMatting declares its Numba kernels with signatures, so its first import in a Python environment compiles
every one of them: about 45 s on a 2-core CPU, inside the first RefineMask, where a cancel cannot stop it.
Importing it here pays that once, at install time; Numba caches the kernels beside PyMatting's sources, and
every later import in that environment takes about a second.
"""

import time


def main() -> None:
    start = time.monotonic()
    try:
        import pymatting  # noqa: F401 - imported for its compiled, cached kernels
    except ImportError:
        print("grounded-sam: PyMatting is not installed; run pip install -r requirements.txt first")
        raise SystemExit(1) from None
    print(f"grounded-sam: PyMatting's kernels ready ({time.monotonic() - start:.0f} s)")


if __name__ == "__main__":
    main()
