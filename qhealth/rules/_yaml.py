"""Block-style YAML for the generated files, with the standard library only.

Enough for Prometheus rules and promtool tests: mappings, lists, numbers,
booleans, null and strings. A multi-line string (PromQL) becomes a literal
block, so the rules read as written; a simple name stays plain, any other
printable string is single-quoted, and the rest double-quoted (a JSON string
is a YAML double-quoted scalar).
"""

from __future__ import annotations

import json
import re
from typing import Any

_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_:./-]*")
_RESERVED = {"true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"}


def _number(value: float) -> str:
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _number(value)
    if value is None:
        return "null"
    text = str(value)
    if _PLAIN.fullmatch(text) and text.lower() not in _RESERVED:
        return text
    if text.isprintable() and not text.startswith(" ") and not text.endswith(" "):
        return "'" + text.replace("'", "''") + "'"
    return json.dumps(text, ensure_ascii=False)


def _block(text: str, indent: int) -> str:
    pad = " " * indent
    body = "".join(f"{pad}{line}\n" if line else "\n" for line in text.split("\n"))
    chomp = "" if text.endswith("\n") else "-"
    return f"|{chomp}\n{body}"


def _inline(value: Any) -> str | None:
    """A value written on its key's line, or None for a block below it."""
    if isinstance(value, dict | list):
        return None if value else ("{}" if isinstance(value, dict) else "[]")
    return _scalar(value)


def dump(value: Any, indent: int = 0) -> str:
    """``value`` as block-style YAML."""
    pad = " " * indent
    if not isinstance(value, dict | list) or not value:
        return f"{pad}{_inline(value)}\n"
    out = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, str) and "\n" in item:
                out.append(f"{pad}{key}: {_block(item, indent + 2)}")
                continue
            inline = _inline(item)
            out.append(
                f"{pad}{key}: {inline}\n" if inline is not None else f"{pad}{key}:\n{dump(item, indent + 2)}"
            )
    else:
        for item in value:
            if isinstance(item, str) and "\n" in item:
                out.append(f"{pad}- {_block(item, indent + 2)}")
                continue
            inline = _inline(item)
            # A block item starts on the dash's line: drop its own indentation there.
            out.append(
                f"{pad}- {inline}\n"
                if inline is not None
                else f"{pad}- {dump(item, indent + 2)[indent + 2 :]}"
            )
    return "".join(out)
