"""How models run: device and precision, caches, freed memory, progress and cancel. Imports only the base
modules (errors, records, settings, prompts, clicks, stages) and this wing."""
