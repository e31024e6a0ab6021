"""The reference generators live beside the docs (``docs/gen/refgen``): make them importable."""

from __future__ import annotations

import sys
from pathlib import Path

GENERATORS = Path(__file__).resolve().parents[3] / "docs" / "gen"
if str(GENERATORS) not in sys.path:
    sys.path.insert(0, str(GENERATORS))
