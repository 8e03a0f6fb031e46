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
# knowingly; their speed and PSNR against the exact path are in benchmarks/RESULTS.md ("Fast mode").
FAST_GUIDANCE_UNTIL = 0.5  # classifier-free guidance over the first half of the steps only
FAST_DEEP_CACHE = 2  # the whole UNet every 2nd step, its deep features reused in between
