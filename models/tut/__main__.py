"""``python -m fastlocal.models.tut train|eval|info ...``: ``python -m fastlocal.models tut ...``."""

from ..cli import main

if __name__ == "__main__":
    raise SystemExit(main(model="tut"))
