"""One optimizer step's bookkeeping, shared by ``histoaug train`` and ``histoaug distill``.

Both loops end a step the same way: the loss averaged over processes, a divergence check, a
line in ``train_log.jsonl`` (main process only), the progress bar, and the result's running
record. Kept in one place so the two runs' logs stay the same format.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from histoaug.errors import ArtifactError
from histoaug.training.run_dir import LOG_FILE


@dataclass
class RunResult:
    """What a train / distill call did: the last step, this run's losses, and whether it finished."""

    out: Path
    steps: int  # last step trained
    losses: list[float] = field(default_factory=list)  # per step, this run only
    finished: bool = False  # False when stopped early by stop_at
    seconds: float = 0.0
    main_process: bool = True  # False on the other ranks of a multi-process run


class StepRecorder:
    """The step log and progress bar of one run (open while the loop runs; ``close`` in ``finally``)."""

    def __init__(self, accelerator, result: RunResult, *, total: int, desc: str, what: str, progress: bool,
                 samples_per_step: int) -> None:
        self.accelerator = accelerator
        self.result = result
        self.what = what
        self.samples_per_step = samples_per_step
        self.log = (result.out / LOG_FILE).open("a") if result.main_process else None
        self.bar = tqdm(total=total, initial=result.steps, desc=desc, unit="step",
                        disable=not (progress and result.main_process))

    def record(self, loss: torch.Tensor, done: int, started: float, lr: float) -> float:
        """Log step ``done`` (begun at ``started``, a ``perf_counter`` time); return its mean loss."""
        mean_loss = float(self.accelerator.gather(loss.detach().reshape(1)).mean())
        if not math.isfinite(mean_loss):
            raise ArtifactError(f"{self.what} diverged at step {done} (loss {mean_loss}); lower --lr")
        rate = self.samples_per_step / max(time.perf_counter() - started, 1e-9)
        self.result.losses.append(mean_loss)
        self.result.steps = done
        if self.log is not None:
            self.log.write(json.dumps({"step": done, "loss": mean_loss, "lr": lr, "samples_per_s": round(rate, 2)})
                           + "\n")
            self.log.flush()
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{mean_loss:.4g}", lr=f"{lr:.2e}", samples_s=f"{rate:.1f}")
        return mean_loss

    def close(self) -> None:
        self.bar.close()
        if self.log is not None:
            self.log.close()
