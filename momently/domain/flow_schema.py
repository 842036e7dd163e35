"""The JSON Schema of flow and segment documents: published as docs/flow.schema.json (editors
use it for completion) and enforced by ``momently flows validate`` before the semantic checks
in ``domain.definitions`` (references, durations, one trigger kind)."""

from __future__ import annotations

from typing import Any, Final

from momently.domain.conditions import MODIFIERS, OPERATORS, SUBJECTS
from momently.domain.durations import PATTERN as DURATION_PATTERN
from momently.domain.durations import TIME_OF_DAY

ID_PATTERN: Final = r"^[a-z0-9][a-z0-9_\-]{0,63}$"
CHANNELS: Final = ("email", "sms", "push", "in_app", "webhook", "console")

_duration: dict[str, Any] = {"type": "string", "pattern": DURATION_PATTERN}
_ref_condition: dict[str, Any] = {"$ref": "#/$defs/condition"}
_event_match: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["event"],
    "properties": {"event": {"type": "string", "minLength": 1}, "where": _ref_condition},
}

SCHEMA: Final[dict[str, Any]] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://momently.dev/schema/flow.schema.json",
    "title": "Momently flow or segment document",
    "type": "object",
    "required": ["id"],
    "properties": {"kind": {"enum": ["flow", "segment", "events"]}},
    "allOf": [
        {
            "if": {"properties": {"kind": {"const": "segment"}}, "required": ["kind"]},
            "then": {"$ref": "#/$defs/segment"},
        },
        {
            "if": {"properties": {"kind": {"const": "events"}}, "required": ["kind"]},
            "then": {"$ref": "#/$defs/events"},
        },
        {
            "if": {"not": {"required": ["kind"]}},
            "then": {"$ref": "#/$defs/flow"},
        },
        {
            "if": {"properties": {"kind": {"const": "flow"}}, "required": ["kind"]},
            "then": {"$ref": "#/$defs/flow"},
        },
    ],
    "$defs": {
        "duration": _duration,
        "delay": {
            "description": "send later: 'delay: 2d', or {for: 2d, at: '10:00' (the first local "
            "time at or after decision + for, in the person's time zone), cancel_if: a condition "
            "checked when the message is due}",
            "oneOf": [
                _duration,
                {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["for"],
                    "properties": {
                        "for": _duration,
                        "at": {"type": "string", "pattern": TIME_OF_DAY},
                        "cancel_if": _ref_condition,
                    },
                },
            ],
        },
        "flow": {
            "type": "object",
            "additionalProperties": False,
            "required": ["id", "trigger"],
            "properties": {
                "kind": {"const": "flow"},
                "id": {"type": "string", "pattern": ID_PATTERN},
                "description": {"type": "string"},
                "tier": {"enum": ["A", "B", "C"], "default": "B"},
                "priority": {"type": "integer", "minimum": 0, "maximum": 1000, "default": 0},
                "tags": {"type": "array", "items": {"type": "string"}},
                "trigger": {"$ref": "#/$defs/trigger"},
                "audience": _ref_condition,
                "message": {
                    "type": "object",
                    "description": "variants (title, subject, body) and one call to action, "
                    "action: {label, url, event}: a tap records Message Clicked, and 'event' when "
                    "given (the goal only when it is the goal's event); linted by flows validate",
                },
                "channels": {"type": "array", "items": {"enum": list(CHANNELS)}, "minItems": 1},
                "goal": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["event", "within"],
                    "properties": {
                        "event": {"type": "string", "minLength": 1},
                        "where": _ref_condition,
                        "within": _duration,
                    },
                },
                "quiet_hours": {
                    "description": "this flow's own quiet hours, or 'bypass' (tier A only)",
                    "oneOf": [
                        {"const": "bypass"},
                        {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["start", "end"],
                            "properties": {
                                "start": {"type": "string", "pattern": TIME_OF_DAY},
                                "end": {"type": "string", "pattern": TIME_OF_DAY},
                            },
                        },
                    ],
                },
                "lateness": {
                    **_duration,
                    "description": "how long absence and inactivity deadlines wait for late events "
                    "(default: the workspace's allowed lateness; 0s for tier A flows that must not wait)",
                },
                "max_age": {
                    **_duration,
                    "description": "a queued message older than this is not sent (paused, deferred)",
                },
                "on_cap": {
                    "type": "object",
                    "additionalProperties": False,
                    "description": "when a frequency cap is hit: defer (default, up to max_delay) or drop",
                    "properties": {"action": {"enum": ["defer", "drop"]}, "max_delay": _duration},
                },
                "follow_up": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["channel", "after"],
                    "description": "send again on another channel if the goal is not reached in time",
                    "properties": {"channel": {"enum": list(CHANNELS)}, "after": _duration},
                },
                "delay": {"$ref": "#/$defs/delay"},
                "webhook": {
                    "type": "object",
                    "additionalProperties": False,
                    "description": "which of the workspace's webhook destinations this flow posts to",
                    "properties": {"destination": {"type": "string", "pattern": ID_PATTERN}},
                },
                "reentry": {
                    "oneOf": [
                        {"enum": ["once", "every_time"]},
                        {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["once_per"],
                            "properties": {"once_per": _duration},
                        },
                    ]
                },
                "experiment": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["arms"],
                    "description": "arms (variant, channels, timing) and a holdout: docs/experiments.md",
                    "properties": {
                        "id": {"type": "string", "pattern": ID_PATTERN},
                        "name": {"type": "string", "minLength": 1},
                        "salt": {"type": "string", "minLength": 1},
                        "holdout": {
                            "description": "share that gets nothing but is tracked, from 0% to 50%",
                            "type": ["string", "integer"],
                        },
                        "arms": {
                            "type": "array",
                            "minItems": 1,
                            "items": {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["id"],
                                "properties": {
                                    "id": {"type": "string", "minLength": 1, "maxLength": 64},
                                    "weight": {"type": "number", "exclusiveMinimum": 0, "default": 1},
                                    "variant": {"type": "string", "minLength": 1},
                                    "channels": {
                                        "type": "array",
                                        "items": {"enum": list(CHANNELS)},
                                        "minItems": 1,
                                    },
                                    "delay": {"$ref": "#/$defs/delay"},
                                },
                            },
                        },
                    },
                },
                "rollback": {"type": "object"},
            },
        },
        "trigger": {
            "type": "object",
            "additionalProperties": False,
            "minProperties": 1,
            "properties": {
                "event": {"type": "string", "minLength": 1},
                "where": _ref_condition,
                "absence": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["first", "then", "within"],
                    "properties": {
                        "first": _event_match,
                        "then": _event_match,
                        "within": _duration,
                        "key": {"type": "string", "minLength": 1},
                    },
                },
                "inactivity": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["for"],
                    "properties": {"for": _duration, "event": {"type": "string", "minLength": 1}},
                },
                "segment": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["id"],
                    "properties": {
                        "id": {"type": "string", "pattern": ID_PATTERN},
                        "on": {"enum": ["enter", "leave"], "default": "enter"},
                    },
                },
                "date": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["trait"],
                    "properties": {
                        "trait": {"type": "string", "minLength": 1},
                        "offset": {"type": "string", "pattern": r"^-?(?:\d+(?:ms|s|m|h|d|w))+$"},
                        "at": {"type": "string", "pattern": TIME_OF_DAY, "default": "09:00"},
                        "repeat": {"enum": ["yearly", "none"], "default": "yearly"},
                    },
                },
                "cohort": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["event", "area", "min_people", "within"],
                    "properties": {
                        "event": {"type": "string", "minLength": 1},
                        "where": _ref_condition,
                        "area": {
                            "type": "object",
                            "additionalProperties": False,
                            "minProperties": 1,
                            "maxProperties": 1,
                            "properties": {
                                "geohash": {"type": "integer", "minimum": 1, "maximum": 9},
                                "postal_code": {"type": "string", "minLength": 1},
                            },
                        },
                        "min_people": {"type": "integer", "minimum": 2, "maximum": 100000},
                        "within": _duration,
                    },
                },
            },
        },
        "segment": {
            "type": "object",
            "additionalProperties": False,
            "required": ["kind", "id", "rule"],
            "properties": {
                "kind": {"const": "segment"},
                "id": {"type": "string", "pattern": ID_PATTERN},
                "description": {"type": "string"},
                "rule": _ref_condition,
            },
        },
        "events": {
            "type": "object",
            "additionalProperties": False,
            "required": ["kind", "id", "names"],
            "properties": {
                "kind": {"const": "events"},
                "id": {"type": "string"},
                "names": {"type": "array", "items": {"type": "string", "minLength": 1}},
            },
        },
        "condition": {
            "type": "object",
            "minProperties": 1,
            "properties": {
                "all": {"type": "array", "minItems": 1, "items": _ref_condition},
                "any": {"type": "array", "minItems": 1, "items": _ref_condition},
                "not": _ref_condition,
                **{s: {"type": "string", "minLength": 1} for s in SUBJECTS},
                **{op: {} for op in OPERATORS},
                "within": _duration,
                "older_than": _duration,
                **{m: _duration for m in MODIFIERS},
            },
            "additionalProperties": False,
        },
    },
}


def condition_keys() -> list[str]:
    return ["all", "any", "not", *SUBJECTS, *OPERATORS, *MODIFIERS]
