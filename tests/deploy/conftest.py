"""`deploy_flows` (the old and new code of a deploy) imports as a top-level module."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
