"""Ray workers: the only package that imports ``ray``. Each wraps ``engine`` objects."""
