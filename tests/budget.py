"""How many examples a property test draws: all of them in `make test`; a share of them in
`make test-fast` (CLARION_TEST_EXAMPLES=0.25), a quick answer while editing, not the full search."""

from __future__ import annotations

import os

SHARE = float(os.environ.get("CLARION_TEST_EXAMPLES", "1"))


def examples(n: int) -> int:
    """`n`, or the fast run's share of it (never fewer than 10)."""
    return max(10, round(n * SHARE)) if SHARE < 1 else n
