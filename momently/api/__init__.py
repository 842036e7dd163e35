"""The HTTP face: Segment-compatible ingest and the admin API. Parses, calls down, formats."""

from momently.api.app import create_app

__all__ = ["create_app"]
