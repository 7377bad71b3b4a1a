"""Validation during training: the flow loss, and what the policy would actually do.

The flow loss scores one denoising step at random noise levels, averaged over every window; a
policy at run time integrates the whole schedule from pure noise and acts on the result. The two
can disagree (issue 12: checkpoints with close flow losses fold the towel at very different
rates), so every validation also samples the held-out windows the way the policy does
(`model.sampling.sample_actions`: single pass, the video expert on frame 0 once, the action
expert over the schedule, fixed noise) and scores the chunk against the demonstration:

- `sampled_epe`: mean Euclidean error of the 14-D action per valid step, in the normalised
  units of the loss (each joint divided by its demonstration std), so one number weighs arms and
  grippers alike;
- `sampled_mae` / `sampled_bias`: (14,) mean |error| and mean signed error (prediction minus
  demonstration) per joint in the robot's units (rad; grippers 0..1): a policy that always
  places short shows as a bias, which an average error hides.

`best/` is chosen by `ValidationResult.score`: the sampled-action error when it was measured,
else the flow action loss. The sampled error is not measured when the model is sharded by FSDP
(its sampler calls submodules outside the sharded forward); that run selects by the flow loss
and says so once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from model import distributed as dist_utils
from model.run_folder import rounded
from model.sampling import sample_actions
from model.train_module import TrainModule, sample_draws

#: Seed of the fixed sampling noise of validation (its own stream: the training draws are untouched).
SAMPLED_NOISE_SEED = 1_000_003


@dataclass(frozen=True)
class ValidationResult:
    """One validation. loss: (total, video, action) flow losses; sampled_*: see the module
    docstring (None when not measured)."""

    loss: tuple[float, float, float]
    sampled_epe: float | None = None
    sampled_mae: tuple[float, ...] | None = None
    sampled_bias: tuple[float, ...] | None = None

    @property
    def score(self) -> float:
        """Lower is better: what `best/` is chosen by."""
        return self.loss[2] if self.sampled_epe is None else self.sampled_epe

    @property
    def criterion(self) -> str:
        return "flow_action_loss" if self.sampled_epe is None else "sampled_action_error"

    def fields(self) -> dict[str, Any]:
        """The validation event's and validation.json's fields."""
        out: dict[str, Any] = {"val_loss": {"total": rounded(self.loss[0]), "video": rounded(self.loss[1]),
                                            "action": rounded(self.loss[2])}}
        if self.sampled_epe is not None:
            out["sampled_action_error"] = {
                "epe": rounded(self.sampled_epe),
                "mae": [rounded(x) for x in self.sampled_mae or ()],
                "bias": [rounded(x) for x in self.sampled_bias or ()],
            }
        out["selected_by"] = self.criterion
        return out


def improves(best: dict[str, Any], result: ValidationResult) -> bool:
    """The rule for best/: a lower score than the best so far. `best` is what trainer.json keeps:
    {"val_action_loss", "step", "score", "criterion"}; a run resumed from a checkpoint written
    before scores existed compares by the flow action loss until its next best."""
    if best.get("step") is None:
        return True
    if best.get("criterion", "flow_action_loss") != result.criterion:
        return result.loss[2] < best["val_action_loss"]
    return result.score < best.get("score", best["val_action_loss"])


def best_record(result: ValidationResult, step: int) -> dict[str, Any]:
    return {"val_action_loss": result.loss[2], "step": step, "score": result.score, "criterion": result.criterion}


class Validator:
    """Validation over a fixed set of windows with fixed noise, so values compare from one
    validation to the next. The windows are spread evenly over the validation episodes and trimmed
    to a multiple of the process count, so every rank runs the same batches (FSDP gathers
    parameters in each forward)."""

    def __init__(self, ctx, config, val_ds, seed: int, samples: int, per_rank: int, action_std: np.ndarray):
        self.ctx, self.config, self.val_ds, self.seed, self.per_rank = ctx, config, val_ds, seed, per_rank
        n = len(val_ds)
        picks = np.unique(np.linspace(0, n - 1, num=min(n, samples)).astype(np.int64))
        count = max(1, len(picks) // ctx.world_size)
        picks = np.resize(picks, count * ctx.world_size)  # (repeats only when fewer windows than ranks)
        self.mine = picks[ctx.rank * count : (ctx.rank + 1) * count]
        self.action_std = torch.as_tensor(action_std, dtype=torch.float64)
        self.latent_shape = (config.video.in_dim, config.latent_frames, *config.latent_hw)
        self.action_shape = (config.action_horizon, config.action_dim)

    def sampled_supported(self, wrapped: torch.nn.Module) -> bool:
        return isinstance(dist_utils.unwrap(wrapped), TrainModule) and not dist_utils.is_fsdp(wrapped)

    @torch.no_grad()
    def __call__(self, wrapped: torch.nn.Module, autocast, sampled: bool) -> ValidationResult:
        wrapped.eval()
        ctx = self.ctx
        module = dist_utils.unwrap(wrapped)
        sums = torch.zeros(4, dtype=torch.float64)  # flow losses x samples, samples
        err_sums = torch.zeros(2 * self.config.action_dim + 2, dtype=torch.float64)  # |e|, e, ||e||, steps
        for start in range(0, len(self.mine), self.per_rank):
            idx = [int(i) for i in self.mine[start : start + self.per_rank]]
            batch = torch.utils.data.default_collate([self.val_ds[i] for i in idx])
            draws = sample_draws(self.config, self.seed, -1, idx, self.latent_shape, self.action_shape)
            inputs = {k: v.to(ctx.device) for k, v in batch.items()}
            with autocast:
                losses = wrapped(inputs["latents"], inputs["proprio"], inputs["action"], inputs["action_is_pad"],
                                 inputs["image_is_pad"], inputs["task"], **{k: v.to(ctx.device) for k, v in draws.items()})
            sums[:3] += losses.double().cpu() * len(idx)  # batch mean x samples = sum
            sums[3] += len(idx)
            if sampled:
                err_sums += self._sampled_errors(module, inputs, idx, autocast)
        total = dist_utils.all_reduce_sum(ctx, sums.to(ctx.device)).cpu()
        loss = tuple((total[:3] / total[3].clamp(min=1)).tolist())
        if not sampled:
            return ValidationResult(loss)
        errs = dist_utils.all_reduce_sum(ctx, err_sums.to(ctx.device)).cpu()
        a = self.config.action_dim
        steps = errs[-1].clamp(min=1)
        # Errors are summed in normalised units; per-joint ones go back to the robot's (x std).
        mae = (errs[:a] / steps * self.action_std).tolist()
        bias = (errs[a : 2 * a] / steps * self.action_std).tolist()
        return ValidationResult(loss, float(errs[2 * a] / steps), tuple(mae), tuple(bias))

    def _sampled_errors(self, module: TrainModule, inputs: dict[str, torch.Tensor], idx: list[int], autocast) -> torch.Tensor:
        """Sums over the valid steps of the batch: |e| (A,), e (A,), ||e||, count; e in normalised units."""
        noise = torch.stack([torch.randn(self.action_shape, generator=torch.Generator().manual_seed(SAMPLED_NOISE_SEED + i))
                             for i in idx])  # fixed per window
        context, mask = module.context(inputs["task"])
        with autocast:
            predicted = sample_actions(module.fastwam, inputs["latents"][:, :, :1], context, mask, inputs["proprio"],
                                       noise=noise.to(self.ctx.device))
        error = (predicted.double() - inputs["action"].double())[~inputs["action_is_pad"]].cpu()  # (M, A)
        return torch.cat([error.abs().sum(0), error.sum(0), error.norm(dim=1).sum()[None],
                          torch.tensor([float(error.shape[0])], dtype=torch.float64)])
