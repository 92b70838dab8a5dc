"""Minimal torchvision for laion-clap's audio path (see ../README.md); not the real package."""
from . import datasets, ops, transforms  # noqa: F401

__version__ = "0.0.0+sao-compat"
