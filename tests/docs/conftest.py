"""The modules of this folder (`flows`, `flows_elsewhere`) import as top-level modules."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
