"""Images in, results out: any image to one tensor form, CLI paths, mask files and previews. Imports the base
modules, runtime/ and matting/ (soft alpha when results are written)."""
