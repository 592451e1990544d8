"""Build fastlocal and its compiled extensions.

``fastlocal._C``       C++ CPU kernels (always built; OpenMP, -O3, C++17).
``fastlocal._C_cuda``  CUDA kernels, built when torch has CUDA and nvcc exists.

Environment switches:
  FASTLOCAL_CUDA=0/1    force the CUDA extension off / on (on without CUDA is an error)
  FASTLOCAL_NATIVE=1    add -march=native (non-portable; off by default)
"""

import glob
import os
import shutil

import torch
from setuptools import find_packages, setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

ROOT = os.path.dirname(os.path.abspath(__file__))
# Triton publishes wheels for Linux only.
_TRITON_PLATFORMS = "platform_system == 'Linux' and platform_machine in 'x86_64 aarch64'"


def _flag(name: str) -> str | None:
    value = os.environ.get(name)
    if value not in (None, "", "0", "1"):
        raise SystemExit(f"{name} must be 0 or 1, got {value!r}")
    return value or None


def _sources(pattern: str) -> list[str]:
    # Relative paths: setuptools rejects absolute source paths in editable builds.
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def _cxx_flags() -> list[str]:
    flags = ["-O3", "-std=c++17", "-fopenmp"]
    if _flag("FASTLOCAL_NATIVE") == "1":
        flags.append("-march=native")
    return flags


def _want_cuda() -> bool:
    forced = _flag("FASTLOCAL_CUDA")
    has_nvcc = CUDA_HOME is not None or shutil.which("nvcc") is not None
    if forced == "0":
        return False
    if forced == "1":
        if torch.version.cuda is None:
            raise SystemExit(
                "FASTLOCAL_CUDA=1 but the installed torch has no CUDA "
                f"(torch {torch.__version__}); install a CUDA build of torch or unset FASTLOCAL_CUDA"
            )
        if not has_nvcc:
            raise SystemExit("FASTLOCAL_CUDA=1 but nvcc was not found (set CUDA_HOME)")
        return True
    return torch.version.cuda is not None and has_nvcc


def _extensions():
    cxx = _cxx_flags()
    extensions = [
        CppExtension(
            "fastlocal._C",
            [*_sources("csrc/cpu/*.cpp"), "csrc/bindings/cpu.cpp"],
            extra_compile_args={"cxx": cxx},
            extra_link_args=["-fopenmp"],
        )
    ]
    if _want_cuda():
        extensions.append(
            CUDAExtension(
                "fastlocal._C_cuda",
                [*_sources("csrc/cuda/*.cu"), *_sources("csrc/bindings/cuda*.cpp")],
                extra_compile_args={
                    "cxx": cxx,
                    "nvcc": ["-O3", "-std=c++17", "--use_fast_math", "-lineinfo"],
                },
            )
        )
    return extensions


def _packages(root: str, name: str) -> list[str]:
    """``name`` (installed from folder ``root``) and every package below it."""
    return [name, *(f"{name}.{sub}" for sub in find_packages(root))]


setup(
    name="fastlocal",
    version="0.1.0",
    description="Fused kernels for long-video temporal models (banded attention with RPB, "
    "topK-std pooling, RoI-align-1D, selective backprop)",
    python_requires=">=3.10",
    # every package under the three source roots, so a new subpackage can never be left out
    packages=[
        *_packages("fastlocal", "fastlocal"),
        *_packages("kernels", "fastlocal.kernels"),
        *_packages("models", "fastlocal.models"),
    ],
    package_dir={
        "fastlocal": "fastlocal",
        "fastlocal.kernels": "kernels",
        "fastlocal.models": "models",
    },
    ext_modules=_extensions(),
    cmdclass={"build_ext": BuildExtension.with_options(no_python_abi_suffix=False)},
    # torch is not pinned upward: pip must never replace an installed torch.
    install_requires=["torch>=2.4", "numpy", "tqdm"],
    extras_require={
        # Triton kernels are tested under TRITON_INTERPRET=1 where there is no GPU (tests/conftest.py).
        # matplotlib: the main job (`python -m fastlocal bench`) writes the plots the README shows.
        # video: PyAV decodes video files (fastlocal.data); frame folders need only Pillow.
        "video": ["av>=12", "Pillow"],
        # h5: per-video detection features stored as .h5 instead of .npy.
        "h5": ["h5py"],
        "test": ["pytest", "pytest-benchmark", "hypothesis", "matplotlib", "av>=12", "Pillow", "h5py",
                 f"triton>=3.4; {_TRITON_PLATFORMS}"],
        "triton": [f"triton>=3.4; {_TRITON_PLATFORMS}"],
        "plot": ["matplotlib"],
    },
    zip_safe=False,
)
