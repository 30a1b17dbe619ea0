"""Algorithms: one readable module each (config, networks, update step)."""
