"""Product-wide sampler defaults (generate, SyntheticPCam, SyntheticSwap, bench, the API).

Chosen for the embedded default model: its model card (histoaug/default_model/MODEL_CARD.md)
measures label fidelity and speed at these settings. No heavy imports: the CLI reads these
to build its ``--help``.
"""

DEFAULT_STEPS = 10  # DPM-Solver++(2M); large SD fine-tunes may want 20-25
DEFAULT_GUIDANCE = 2.0
DEFAULT_SCHEDULER = "dpmsolver++"
SCHEDULER_NAMES = ("dpmsolver++", "ddim", "euler")
