"""``python -m fastlocal.models NAME train|eval|info --preset P ...`` (see :mod:`fastlocal.models.cli`)."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
