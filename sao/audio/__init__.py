"""Audio decoding, resampling and hashing used by every stage."""
from .io import AudioDecodeError, AudioInfo, file_digests, load, probe, verify

__all__ = ["AudioDecodeError", "AudioInfo", "file_digests", "load", "probe", "verify"]
