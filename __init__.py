"""ComfyUI entry point: cloning this repository into ``ComfyUI/custom_nodes/`` installs the nodes."""

try:
    from .grounded_sam.comfy import adapter as _adapter
    from .grounded_sam.comfy.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
except ImportError:
    if __package__:  # imported as ComfyUI imports a custom node folder: a real failure inside the pack
        raise
    # Imported as a plain module: pytest imports a checkout's __init__.py so when the checkout's folder
    # name is not a Python name ("grounded-sam"). The installed package gives the same nodes.
    from grounded_sam.comfy import adapter as _adapter
    from grounded_sam.comfy.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

_adapter.register_model_folders()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
