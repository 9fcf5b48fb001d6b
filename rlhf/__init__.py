"""RLHF Studio backend: storage, import, annotation engine, statistics, export, training. Never imports Streamlit."""

__version__ = "0.1.0"

from rlhf import libnoise as _libnoise

# Before any library that prints a known-harmless message at its import can be imported (see rlhf/libnoise.py).
_libnoise.install()
