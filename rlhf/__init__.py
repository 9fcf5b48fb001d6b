"""RLHF Studio backend: storage, import, annotation engine, statistics, export, training. Never imports Streamlit."""

__version__ = "0.1.0"
