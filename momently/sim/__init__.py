"""Synthetic customers for the demo, tests and benchmarks."""
