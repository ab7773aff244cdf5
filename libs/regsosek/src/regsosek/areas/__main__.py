"""python -m regsosek.areas: see the package docstring."""

from regsosek.areas import main

raise SystemExit(main())
