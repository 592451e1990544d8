"""``python -m fastlocal <command>``; see :mod:`fastlocal.cli`."""

from .cli import main

raise SystemExit(main())
