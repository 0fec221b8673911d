"""Flexible-length masked diffusion (FlexMDM): training, exact-verified samplers, tasks and benchmarks."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("flexmdm")  # the version of pyproject.toml, as installed
except PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
