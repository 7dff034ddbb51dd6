"""Typed readers over ``os.environ`` that refuse bad values instead of guessing."""

import json
import os
import re
from collections.abc import Callable
from typing import Any, TypeVar

from django.core.exceptions import ImproperlyConfigured

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _read(name: str, default: T, parse: Callable[[str], T]) -> T:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return parse(raw.strip())
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}={raw!r}: {exc}") from exc


def env_str(name: str, default: str = "") -> str:
    return _read(name, default, str)


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    value = _read(name, default, int)
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be >= {minimum}, got {value}")
    return value


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    value = _read(name, default, float)
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be >= {minimum}, got {value}")
    return value


def _parse_bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError("expected one of 1/0, true/false, yes/no, on/off")


def env_bool(name: str, default: bool) -> bool:
    return _read(name, default, _parse_bool)


def env_list(name: str, default: list[str]) -> list[str]:
    return _read(name, default, lambda raw: [item.strip() for item in raw.split(",") if item.strip()])


_RATE = re.compile(r"[1-9][0-9]*/[smhd][a-z]*")


def env_rate(name: str, default: str) -> str:
    """A request rate in DRF's notation: ``600/min``, ``10/s`` (the period's first letter counts)."""
    value = env_str(name, default)
    if not _RATE.fullmatch(value):
        raise ImproperlyConfigured(f"{name}={value!r}: expected requests/period, e.g. 600/min or 10/s")
    return value


def env_choice(name: str, default: str, choices: set[str]) -> str:
    value = env_str(name, default)
    if value not in choices:
        raise ImproperlyConfigured(f"{name}={value!r}: expected one of {sorted(choices)}")
    return value


def _parse_json_object(raw: str) -> dict[str, Any]:
    value = json.loads(raw or "{}")  # json.JSONDecodeError is a ValueError
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object")
    return value


def env_json_object(name: str) -> dict[str, Any]:
    """A JSON object (keyword arguments for a library); unset or empty: ``{}``."""
    return _read(name, {}, _parse_json_object)
