"""Loads this directory's fakes.py as the module `intake_fakes`: every service's tests have a
fakes.py, and test directories are not packages, so a plain `import fakes` would find whichever
was imported first in a run over several services."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

if "intake_fakes" not in sys.modules:
    _spec = importlib.util.spec_from_file_location("intake_fakes", Path(__file__).with_name("fakes.py"))
    assert _spec is not None and _spec.loader is not None
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["intake_fakes"] = _module
    _spec.loader.exec_module(_module)
