"""One pipeline: the stage contract (stage.py), the registry in paper order (registry.py) and the
runner (runner.py) that ``sao refresh``, ``sao demo``, the chaos runner and the Prefect flows share."""
from .stage import Plan, RunOptions, Stage, StageContext, Stats

__all__ = ["Plan", "RunOptions", "Stage", "StageContext", "Stats"]
