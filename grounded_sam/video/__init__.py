"""Video: objects followed through a clip with stable ids (``tracker``), above the segmenters."""
