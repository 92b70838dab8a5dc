"""The models: Oobleck VAE, DiT with T5 and timing conditioning, and the sampler."""
from .checkpoint import CheckpointError, CheckpointMismatch, load_checkpoint
from .factory import ConditionedDiffusionModel, ModelConfigError, create_model, load_config, parameter_counts

__all__ = ["CheckpointError", "CheckpointMismatch", "ConditionedDiffusionModel", "ModelConfigError", "create_model",
           "load_checkpoint", "load_config", "parameter_counts"]
