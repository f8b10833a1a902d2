"""ComfyUI adapters: the only part of the package that knows ComfyUI exists.

A ComfyUI server runs for days on whatever image sizes and prompts it is given, so torch's CPU kernel
caches are bounded here, when ComfyUI loads the pack and before any model runs (``kernel_caches``).
"""

from ..runtime.kernel_caches import bound_kernel_caches

bound_kernel_caches()
