"""Momently: a self-hostable engine for customer micro-moments.

The package is layered as described in docs/architecture.md: faces (``cli``, ``api``)
call down into ``engine`` and ``store``; ``domain`` holds the pure rules.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
