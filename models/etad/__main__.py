"""``python -m fastlocal.models.etad train|eval|info ...``: ``python -m fastlocal.models etad ...``."""

from ..cli import main

if __name__ == "__main__":
    raise SystemExit(main(model="etad"))
