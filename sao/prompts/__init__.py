"""Randomised metadata prompts (paper section 3.2): pure, seeded functions over records."""
from .builder import CASES, PromptInputs, build_prompt, epoch_prompt, fma_prompt, freesound_prompt, prompt_rng

__all__ = ["CASES", "PromptInputs", "build_prompt", "epoch_prompt", "fma_prompt", "freesound_prompt", "prompt_rng"]
