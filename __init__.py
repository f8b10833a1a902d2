"""ComfyUI entry point: cloning this repository into ``ComfyUI/custom_nodes/`` installs the nodes."""

from .grounded_sam.comfy import adapter as _adapter
from .grounded_sam.comfy.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

_adapter.register_model_folders()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
