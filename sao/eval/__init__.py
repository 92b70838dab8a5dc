"""Evaluation (paper section 5): autoencoder reconstruction metrics (tables 3 and 4) and
generation metrics (tables 1, 2 and 5) over pluggable embedders, in paper-shaped reports."""
from .metrics import (fd, frechet_distance, has_connector, has_speech, kl_generated_vs_reference, mel_distance,
                      si_sdr, stft_distance, table5_subsets)

__all__ = ["fd", "frechet_distance", "has_connector", "has_speech", "kl_generated_vs_reference", "mel_distance",
           "si_sdr", "stft_distance", "table5_subsets"]
