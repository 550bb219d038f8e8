"""Extraction configs for `embaug extract`."""
