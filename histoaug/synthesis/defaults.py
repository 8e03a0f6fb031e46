"""Product-wide sampler defaults (generate, SyntheticPCam, SyntheticSwap, bench, the API).

Chosen for the embedded default model: its model card (histoaug/default_model/MODEL_CARD.md)
measures label fidelity and speed at these settings. No heavy imports: the CLI reads these
to build its ``--help``.
"""

DEFAULT_STEPS = 10  # DPM-Solver++(2M); large SD fine-tunes may want 20-25
DEFAULT_GUIDANCE = 2.0
DEFAULT_SCHEDULER = "dpmsolver++"
SCHEDULER_NAMES = ("dpmsolver++", "ddim", "euler")

# Fast mode (``generate(..., fast=True)``, ``histoaug generate --fast``): approximations chosen
# knowingly; speed, PSNR and label fidelity per variant are in benchmarks/RESULTS.md ("Fast on CPU
# by default"). Deep cache 2 alone: 3.2x diffusers fp32 at 40 dB with label fidelity within 0.1
# point of the exact path; adding guidance until 0.5 (3.8x, 34 dB) cost 6 points of fidelity.
FAST_GUIDANCE_UNTIL = 1.0  # classifier-free guidance on every step (partial guidance lost fidelity)
FAST_DEEP_CACHE = 2  # the whole UNet every 2nd step, its deep features reused in between
