"""Reads Deutzia's settings from the environment, at call time, naming any variable that is missing.

Nothing here runs at import: tests and tools set their own environment before the first component is built.
"""

from __future__ import annotations

import math
import os

from chalicelib.errors import ConfigError

ALL_TABLES = "*"
# Lambda's longest invocation, which the scheduled functions plan their work within.
LAMBDA_MAX_SECONDS = 900.0


def setting(name: str, default: str | None = None) -> str:
    """The variable's value, or its default; ConfigError naming it when neither is set."""
    value = os.environ.get(name, "").strip() or default
    if not value:
        raise ConfigError(f"environment variable {name} is required")
    return value


def flag(name: str) -> bool:
    """A true/false variable; unset is false. ConfigError for any other value."""
    value = os.environ.get(name, "").strip().lower()
    if value in ("", "false", "0", "no"):
        return False
    if value in ("true", "1", "yes"):
        return True
    raise ConfigError(f"environment variable {name} must be true or false, not {value!r}")


def number(name: str, default: float) -> float:
    """A positive, finite number of seconds (or similar); ConfigError naming the variable when it is not one."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name} must be a number, not {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"environment variable {name} must be a positive finite number, not {raw!r}")
    return value


def audited_tables() -> frozenset[str] | None:
    """The tables the API serves, from AUDITED_TABLES; None when it is `*` (any table)."""
    names = [name.strip() for name in setting("AUDITED_TABLES").split(",") if name.strip()]
    if ALL_TABLES in names:
        return None
    if not names:
        raise ConfigError("environment variable AUDITED_TABLES names no table")
    return frozenset(names)


def audit_prefix() -> str:
    """AUDIT_PREFIX with exactly one trailing slash."""
    return setting("AUDIT_PREFIX", "audit/").strip("/") + "/"


def compacted_prefix() -> str:
    """COMPACTED_PREFIX (the compacted tier, beside the fresh one) with exactly one trailing slash."""
    prefix = setting("COMPACTED_PREFIX", "compacted/").strip("/") + "/"
    if prefix == audit_prefix():
        raise ConfigError("environment variable COMPACTED_PREFIX must differ from AUDIT_PREFIX")
    return prefix
