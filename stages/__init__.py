"""The three data-engine stages, the pipeline driver and the command line (the one place
that imports Hydra)."""
