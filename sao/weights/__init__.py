"""Pretrained checkpoints: the table of published digests (table) and the verified download (fetch)."""
