"""sao: a license-clean data pipeline and training stack for a Stable-Audio-Open-style model."""
__version__ = "0.1.0"
