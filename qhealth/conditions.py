"""The conditions and verdicts: what a pool's health is said in.

``qhealth.Condition`` and ``qhealth.Health`` are also at the top level; the
rest lives here::

    from qhealth.conditions import SEVERITY, State, state_of
"""

from ._classifier import Finding, Health
from ._condition import HEALTHY, SEVERITY, WARMING_UP, Condition, State, state_of

__all__ = ["HEALTHY", "SEVERITY", "WARMING_UP", "Condition", "Finding", "Health", "State", "state_of"]
