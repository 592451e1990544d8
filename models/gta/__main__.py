"""``python -m fastlocal.models.gta train|eval|info ...``: ``python -m fastlocal.models gta ...``."""

from ..cli import main

if __name__ == "__main__":
    raise SystemExit(main(model="gta"))
