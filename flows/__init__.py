"""Prefect flows: thin wrappers over sao's stages."""
