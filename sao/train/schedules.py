"""Learning-rate schedule and EMA as stable-audio-tools (SAT) trains with them: its ``InverseLR``
(training/utils.py) and the ``ema_pytorch.EMA`` it pins (ema-pytorch 0.2.3), with SAT's settings
(beta 0.9999, power 3/4, update_every 1, update_after_step 1) as defaults."""
from __future__ import annotations

import torch
from torch import nn


def inverse_lr(step: int, *, inv_gamma: float = 1.0, power: float = 1.0, warmup: float = 0.0) -> float:
    """InverseLR's multiplier after STEP scheduler steps: exponential warm-up times inverse decay."""
    return (1 - warmup ** (step + 1)) * (1 + step / inv_gamma) ** -power


class InverseLR(torch.optim.lr_scheduler.LRScheduler):
    """SAT's InverseLR: lr = (1 - warmup^(k+1)) * max(final_lr, base_lr * (1 + k / inv_gamma)^-power) after k
    steps. Its state is plain numbers (weights_only loadable)."""

    def __init__(self, optimizer, inv_gamma: float = 1.0, power: float = 1.0, warmup: float = 0.0,
                 final_lr: float = 0.0, last_epoch: int = -1):
        if not 0.0 <= warmup < 1:
            raise ValueError(f"InverseLR warmup {warmup}: must be in [0, 1)")
        self.inv_gamma, self.power, self.warmup, self.final_lr = inv_gamma, power, warmup, final_lr
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        k = self.last_epoch
        return [(1 - self.warmup ** (k + 1)) * max(self.final_lr, base * (1 + k / self.inv_gamma) ** -self.power)
                for base in self.base_lrs]


class EMA:
    """ema-pytorch 0.2.3's EMA (what SAT pins) on a separate EMA model: ``update()`` counts its calls k (from 0);
    calls with k <= update_after_step copy the weights, and so does the first later one (0.2.3 initialises
    there); then every update_every-th call lerps with decay min(beta, max(min_value, 1 - (1 + e/inv_gamma)^-power)),
    e = k - update_after_step (the step counter after the call, less update_after_step, less 1). Floating point
    parameters and buffers are averaged, as there. SAT calls it once per generator step, before the
    optimizer's step."""

    def __init__(self, model: nn.Module, ema_model: nn.Module, *, beta: float = 0.9999, power: float = 0.75,
                 inv_gamma: float = 1.0, update_after_step: int = 1, update_every: int = 1, min_value: float = 0.0):
        self.model, self.ema_model = model, ema_model
        self.beta, self.power, self.inv_gamma = beta, power, inv_gamma
        self.update_after_step, self.update_every, self.min_value = update_after_step, update_every, min_value
        self.step, self.initted = 0, False

    def decay(self, counter: int | None = None) -> float:
        """The decay of a lerp made when the step counter (after its increment) is COUNTER."""
        epoch = max((self.step if counter is None else counter) - self.update_after_step - 1, 0)
        if epoch <= 0:
            return 0.0
        return min(max(1 - (1 + epoch / self.inv_gamma) ** -self.power, self.min_value), self.beta)

    def _pairs(self):
        floating = lambda t: t.dtype in (torch.float32, torch.float16)  # noqa: E731  (0.2.3's test)
        yield from ((e, m) for e, m in zip(self.ema_model.parameters(), self.model.parameters()) if floating(e))
        yield from ((e, m) for e, m in zip(self.ema_model.buffers(), self.model.buffers()) if floating(e))

    @torch.no_grad()
    def update(self) -> None:
        k = self.step
        self.step += 1
        if k % self.update_every:
            return
        if k <= self.update_after_step or not self.initted:
            for e, m in self._pairs():
                e.copy_(m.detach())
            if k <= self.update_after_step:
                return
            self.initted = True
        d = self.decay()
        for e, m in self._pairs():
            e.lerp_(m.detach(), 1 - d)

    def state_dict(self) -> dict:
        return {"step": self.step, "initted": self.initted}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.initted = int(state["step"]), bool(state["initted"])
