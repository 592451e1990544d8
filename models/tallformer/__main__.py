"""``python -m fastlocal.models.tallformer init-memory|train|eval|info ...``: ``python -m fastlocal.models
tallformer ...``."""

from ..cli import main

if __name__ == "__main__":
    raise SystemExit(main(model="tallformer"))
