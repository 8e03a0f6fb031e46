"""Product-wide sampler defaults (generate, SyntheticPCam, SyntheticSwap, bench, the API).

Chosen for the embedded default model: its model card (histoaug/default_model/MODEL_CARD.md)
measures label fidelity and speed at these settings. No heavy imports: the CLI reads these
to build its ``--help``.

A model dir may carry its own defaults (``sampler_defaults.json``, or an ``LCMScheduler``
scheduler config, as ``histoaug distill`` writes): :class:`ModelSamplerDefaults` holds them, and
``generate`` / ``SyntheticPCam`` / the CLI use them when the user passes no ``steps`` /
``guidance`` / ``scheduler`` / ``guidance_rescale``; explicit values always win.
"""

from dataclasses import dataclass

from histoaug.errors import InvalidArgumentError

DEFAULT_STEPS = 10  # DPM-Solver++(2M); large SD fine-tunes may want 20-25
DEFAULT_GUIDANCE = 2.0
# Guidance rescale (Lin et al. 2023, section 3.4; diffusers' ``guidance_rescale``): after CFG, the
# guided noise prediction is pulled back towards the cond prediction's standard deviation by this
# fraction. 0 = plain CFG. A model may ask for more (the embedded model: 0.5, its model card).
DEFAULT_GUIDANCE_RESCALE = 0.0


def check_guidance_rescale(value: float, option: str = "guidance_rescale") -> None:
    """One rule for the sampler, ``generate``'s settings and distillation: a fraction in [0, 1] (NaN refused)."""
    if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
        raise InvalidArgumentError(f"{option} must be a number in [0, 1], got {value!r}")


DEFAULT_SCHEDULER = "dpmsolver++"
SCHEDULER_NAMES = ("dpmsolver++", "ddim", "euler", "lcm")  # lcm: for consistency-distilled students only

# A few-step consistency student (``histoaug distill``): guidance is folded into its weights, so
# one UNet call per step (guidance 1) and LCM's multistep sampling at the student's step count.
STUDENT_STEPS = 4
STUDENT_GUIDANCE = 1.0
STUDENT_SCHEDULER = "lcm"


@dataclass(frozen=True)
class ModelSamplerDefaults:
    """The sampler settings a model dir asks for when the user gives none (product defaults otherwise)."""

    steps: int = DEFAULT_STEPS
    guidance: float = DEFAULT_GUIDANCE
    scheduler: str = DEFAULT_SCHEDULER
    guidance_rescale: float = DEFAULT_GUIDANCE_RESCALE

# Fast mode (``generate(..., fast=True)``, ``histoaug generate --fast``): approximations chosen
# knowingly; speed, PSNR and label fidelity per variant are in benchmarks/RESULTS.md ("Fast on CPU
# by default"). Deep cache 2 alone: 3.2x diffusers fp32 at 40 dB with label fidelity within 0.1
# point of the exact path; adding guidance until 0.5 (3.8x, 34 dB) cost 6 points of fidelity.
FAST_GUIDANCE_UNTIL = 1.0  # classifier-free guidance on every step (partial guidance lost fidelity)
FAST_DEEP_CACHE = 2  # the whole UNet every 2nd step, its deep features reused in between
