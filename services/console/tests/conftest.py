"""Loads this directory's fakes.py as the module `console_fakes` (the test events as `console_events`):
every service's tests have a fakes.py, and test directories are not packages, so a plain `import fakes` would find whichever
was imported first in a run over several services."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

for _name, _file in (("console_fakes", "fakes.py"), ("console_events", "console_events.py")):
    if _name not in sys.modules:
        _spec = importlib.util.spec_from_file_location(_name, Path(__file__).with_name(_file))
        assert _spec is not None and _spec.loader is not None
        _module = importlib.util.module_from_spec(_spec)
        sys.modules[_name] = _module
        _spec.loader.exec_module(_module)
