"""Experiment configs: one `get_config(arg=None)` per file (see each file's docstring)."""
