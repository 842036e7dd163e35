"""Experiments: outcomes and results (``results``) over the statistics in ``momently.stats``."""
