"""Copyright review: content detection for music found in Freesound audio, catalogue
matching with human review for FMA tracks, and the review queue in the catalogue."""
