"""What is wrong with the configuration, said so a person can fix it: one problem per
variable (``MOMENTLY_PORT: expected an integer, got 'abc'``), with credentials masked.

pydantic's own messages quote the whole input, which for ``MOMENTLY_SMTP_URL`` or
``MOMENTLY_DATABASE_URL`` includes the password, and name fields rather than variables. Here
a value is shown only when it cannot be a secret: a URL loses its password, and a variable
whose name says secret, token, key or password is never shown at all."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError
from pydantic_settings import SettingsError

_SECRET_WORDS = ("secret", "token", "password", "key")
_SHOWN_CHARS = 60


@dataclass(frozen=True, slots=True)
class SettingProblem:
    name: str  # the variable (MOMENTLY_PORT) or the flag (--port) that carried the value
    message: str

    def __str__(self) -> str:
        return f"{self.name}: {self.message}"


class InvalidSettings(ValueError):
    """One or more settings are malformed; ``str()`` is one line per problem."""

    def __init__(self, problems: list[SettingProblem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = tuple(problems)

    @classmethod
    def from_settings_error(cls, exc: SettingsError, *, env_prefix: str) -> InvalidSettings:
        """pydantic-settings failed to decode a JSON-typed variable before validation."""
        found = re.search(r'field "(\w+)"', str(exc))
        name = env_prefix + found.group(1).upper() if found else env_prefix + "*"
        return cls([SettingProblem(name, "expected JSON (value not shown)")])


def mask_url(url: str) -> str:
    """The URL with its password (if any) replaced by ``***``."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        password = None
    if password is None:
        # not a parseable URL: still hide anything between "://user:" and "@"
        return re.sub(r"(://[^/:@]*:)[^/@]*@", r"\1***@", url)
    netloc = parts.netloc.rpartition("@")
    user = netloc[0].partition(":")[0]
    return parts._replace(netloc=f"{user}:***@{netloc[2]}").geturl()


def problems_from(
    exc: ValidationError, *, env_prefix: str, flags: set[str] | frozenset[str] = frozenset()
) -> list[SettingProblem]:
    """One problem per error pydantic found, named by the variable (or the flag in ``flags``)."""
    problems: list[SettingProblem] = []
    for error in exc.errors(include_url=False):
        loc = [str(part) for part in error["loc"]]
        field = loc[0] if loc else ""
        name = f"--{field.replace('_', '-')}" if field in flags else env_prefix + field.upper()
        where = f"{'.'.join(loc[1:])}: " if len(loc) > 1 else ""
        problems.append(SettingProblem(name, where + _message(error, field)))
    return problems


def _message(error: Any, field: str) -> str:
    kind: str = error["type"]
    ctx: dict[str, Any] = error.get("ctx") or {}
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))  # our validators' own words, already masked
    expected = {
        "int_parsing": "expected an integer",
        "int_from_float": "expected an integer",
        "int_type": "expected an integer",
        "float_parsing": "expected a number",
        "float_type": "expected a number",
        "finite_number": "expected a finite number",
        "bool_parsing": "expected true or false",
        "bool_type": "expected true or false",
        "string_type": "expected a string",
        "list_type": "expected a JSON list",
        "dict_type": "expected a JSON object",
        "greater_than": f"expected a value greater than {_number(ctx.get('gt'))}",
        "greater_than_equal": f"expected a value of at least {_number(ctx.get('ge'))}",
        "less_than": f"expected a value less than {_number(ctx.get('lt'))}",
        "less_than_equal": f"expected a value of at most {_number(ctx.get('le'))}",
    }.get(kind, str(error["msg"]).lower())
    return f"{expected}, got {_shown(field, error.get('input'))}"


def _shown(field: str, value: Any) -> str:
    if any(word in field for word in _SECRET_WORDS):
        return "a value not shown"
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if "url" in field:
        text = mask_url(text)
    if len(text) > _SHOWN_CHARS:
        text = text[: _SHOWN_CHARS - 3] + "..."
    return repr(text)


def _number(bound: Any) -> str:
    return str(int(bound)) if isinstance(bound, float) and bound.is_integer() else str(bound)
