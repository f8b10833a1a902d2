"""ComfyUI adapters: the only part of the package that knows ComfyUI exists."""
