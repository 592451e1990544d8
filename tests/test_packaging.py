"""Installing fastlocal into a fresh virtual environment gives the documented import paths.

The package is built from a copy of the source tree (so no build artefacts of the
checkout leak in) into a venv without pip; pip runs from this interpreter with
``--python``. The venv sees this environment's torch through a ``.pth`` line, so
nothing is downloaded. Both install modes must expose the same modules.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IGNORE = shutil.ignore_patterns(".git", "build", "*.egg-info", "*.so", "__pycache__", ".venv*", "bench-results",
                                ".hypothesis", ".pytest_cache", ".ruff_cache", ".benchmarks")

CHECK = """
import importlib.util, pathlib, sys, torch
import fastlocal, fastlocal.models, fastlocal.kernels, fastlocal._C
venv = pathlib.Path(sys.prefix).resolve()
editable = sys.argv[1] == "editable"
for module in (fastlocal, fastlocal._C, fastlocal.models, fastlocal.kernels):
    where = pathlib.Path(module.__file__).resolve()
    inside = venv in where.parents
    # a regular install copies everything into the venv; an editable one points at the source copy
    assert inside != editable, (module.__name__, where)
# kernels/ and models/ install only as subpackages: nothing named `models` or `kernels` at top level
for name in ("models", "kernels"):
    assert importlib.util.find_spec(name) is None, name
# every package of the source tree is installed (argv[2]: the source copy)
source = pathlib.Path(sys.argv[2])
roots = {"fastlocal": "fastlocal", "kernels": "fastlocal.kernels", "models": "fastlocal.models"}
for folder, name in roots.items():
    for init in (source / folder).rglob("__init__.py"):
        package = ".".join([name, *init.parent.relative_to(source / folder).parts])
        assert importlib.util.find_spec(package) is not None, package
assert fastlocal.available_backends()["cpu"] == "available", fastlocal.available_backends()
x = torch.arange(10.0).view(1, 1, 10)
out = fastlocal.roi_align_1d(x, torch.tensor([[0.0, 2.0, 6.0]]), 2, sampling_ratio=1, backend="cpu")
assert out.flatten().tolist() == [3.0, 5.0], out
print("ok")
"""


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["regular", "editable"])
def test_fresh_venv_install(tmp_path: Path, mode: str) -> None:
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=IGNORE)
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.check_output([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                        text=True).strip())
    # Borrow torch (and the build tools) from this environment instead of downloading them.
    (site / "_parent_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-build-isolation",
               "--no-deps", "--no-index", "--quiet"]
    install += ["-e", str(source)] if mode == "editable" else [str(source)]
    env = {**os.environ, "FASTLOCAL_CUDA": "0", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    subprocess.run(install, check=True, env=env, cwd=tmp_path)
    result = subprocess.run([python, "-c", CHECK, mode, str(source)], capture_output=True, text=True, cwd=tmp_path,
                            env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "ok"
