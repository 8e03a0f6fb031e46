"""Scheduler names -> diffusers scheduler instances built from the model's scheduler config."""

from __future__ import annotations

from typing import Any

from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, LCMScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from histoaug.errors import InvalidArgumentError
from histoaug.synthesis.defaults import SCHEDULER_NAMES


def make_scheduler(name: str, config: dict[str, Any]) -> SchedulerMixin:
    """A fresh scheduler (they keep per-run state) of the named kind over the model's noise schedule.

    The same function configures the diffusers baseline in the benchmarks, so both sample with
    identical schedulers.
    """
    if name == "dpmsolver++":
        return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", solver_order=2)
    if name == "ddim":
        return DDIMScheduler.from_config(config)
    if name == "euler":
        return EulerDiscreteScheduler.from_config(config)
    if name == "lcm":  # multistep consistency sampling; its re-noising draws from per-sample generators
        return LCMScheduler.from_config(config)
    raise InvalidArgumentError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULER_NAMES)}")
