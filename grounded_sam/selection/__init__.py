"""Which objects a run keeps: boxes by score and overlap, exclusion, picking. Imports only the base modules."""
