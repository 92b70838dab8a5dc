"""Audio analysis models and rules: the PANNs music screen and audio fingerprints."""
