"""Optional dependencies: imported when used, with a message naming the extra that installs them.

``import qhealth`` needs only the standard library; a framework adapter, a
broker reader or an exporter imports its library on first use, through
:func:`require`, so that a missing one says what to install (as structlog's
``"{who} requires the {package} package installed"``).
"""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, *, extra: str, who: str) -> ModuleType:
    """Import an optional dependency, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{who} requires the {module.split('.', maxsplit=1)[0]} package: pip install 'qhealth[{extra}]'"
        ) from exc
