"""Where model weights live and how they are read safely: folders, the known files, downloads, checkpoints.
Imports only the base modules and runtime/."""
