"""Training stages on the shards: the autoencoder (paper 4.1) and the DiT (paper 4.2), with an
attribution manifest beside every checkpoint."""
