"""The models: Oobleck VAE, DiT with T5 and timing conditioning, and the sampler."""
from .factory import (CheckpointMismatch, ConditionedDiffusionModel, ModelConfigError, create_model, load_checkpoint,
                      load_config, parameter_counts)

__all__ = ["CheckpointMismatch", "ConditionedDiffusionModel", "ModelConfigError", "create_model", "load_checkpoint",
           "load_config", "parameter_counts"]
