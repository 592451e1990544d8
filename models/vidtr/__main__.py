"""``python -m fastlocal.models.vidtr train|eval|info ...``: ``python -m fastlocal.models vidtr ...``."""

from ..cli import main

if __name__ == "__main__":
    raise SystemExit(main(model="vidtr"))
