"""WebDataset shards for the autoencoder and diffusion training stages."""
from .build import BuildPlan, ShardBuildError, build_shards, finalize_build, prepare_build, run_shards
from .hifi import high_frequency_energy_share, is_hifi
from .plan import AE_CHUNK, DIFFUSION_WINDOW, SAMPLE_RATE, PlanConfig, assign_shards, plan_samples
from .select import eligible_recordings

__all__ = ["AE_CHUNK", "BuildPlan", "DIFFUSION_WINDOW", "PlanConfig", "SAMPLE_RATE", "ShardBuildError",
           "assign_shards", "build_shards", "eligible_recordings", "finalize_build", "high_frequency_energy_share",
           "is_hifi", "plan_samples", "prepare_build", "run_shards"]
