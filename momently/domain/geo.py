"""Places: distance between two points and geohash areas, for "within N km" conditions and
for cohort triggers that group people by neighbourhood."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final

import pygeohash

EARTH_RADIUS_KM: Final = 6371.0088


def point(value: object) -> tuple[float, float] | None:
    """A (lat, lon) from what clients send: Segment's ``context.location`` uses
    ``latitude``/``longitude``; ``lat``/``lon``/``lng`` and ``[lat, lon]`` are accepted too."""
    lat: object
    lon: object
    if isinstance(value, Mapping):
        lat = value.get("latitude", value.get("lat"))
        lon = value.get("longitude", value.get("lon", value.get("lng")))
    elif isinstance(value, list | tuple) and len(value) == 2:
        lat, lon = value
    else:
        return None
    try:
        la, lo = float(lat), float(lon)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if not (-90.0 <= la <= 90.0 and -180.0 <= lo <= 180.0) or isinstance(lat, bool) or isinstance(lon, bool):
        return None
    return (la, lo)


def distance_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle (haversine) distance."""
    lat1, lon1, lat2, lon2 = map(math.radians, (a[0], a[1], b[0], b[1]))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def geohash(p: tuple[float, float], precision: int) -> str:
    return str(pygeohash.encode(p[0], p[1], precision=precision))
