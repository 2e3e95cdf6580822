"""Every named choice and limit of the package, written once and imported where it is needed.

Standard library only and no imports of the package: the CLI builds ``--help`` from these without torch.
"""

from __future__ import annotations

# ---------------------------------------------------------------------- sampling
SAMPLERS = ("ddpm", "ddim", "dpmpp_2m", "euler", "consistency")  # the keys of core.samplers.SAMPLERS
DETERMINISTIC_SAMPLERS = ("ddim", "dpmpp_2m", "euler")  # no noise on the way (interpolation needs one)
# The steps a sampler takes when none are given; None: all T. The model card's recommendation comes first.
DEFAULT_STEPS: dict[str, int | None] = {"ddpm": None, "ddim": 50, "dpmpp_2m": 20, "euler": 50, "consistency": 4}
SPACINGS = ("trailing", "leading", "linspace")  # time grids (core.schedule.Schedule.timesteps)
VARIANCES = ("large", "small")  # DDPM's sigma²: beta_t or the posterior's beta~_t
INPAINT_SAMPLERS = ("ddpm", "ddim")  # RePaint's one-step updates (ddpm is the default)
# RePaint's steps per sampler when none are given (a card's steps are tuned for its own sampler and guidance;
# these from benchmarks/inpaint_samplers.py)
INPAINT_STEPS: dict[str, int] = {"ddpm": 50, "ddim": 20}
IMG2IMG_STRENGTH = 0.6  # img2img's default strength (inpainting's is 1: the masked region from pure noise)
UNGUIDED = 1.0  # the guidance scale that is no guidance: the conditional model itself
MAX_GUIDANCE = 100.0  # far beyond any useful scale (2-7); above it samples are saturated noise
# Guidance intervals (lo, hi] are of the diffusion time s = (t + 1) / T (1: the noisiest step); this one is all of it
GUIDANCE_EVERYWHERE = (0.0, 1.0)
NO_GUIDE = "none"  # the autoguidance guide that is none: turns a model card's guide off (sample --guide none)


def default_steps(sampler: str, T: int) -> int:
    """The steps ``sampler`` takes when given none, never more than ``T``."""
    n = DEFAULT_STEPS[sampler]
    return T if n is None else min(n, T)


# ---------------------------------------------------------------------- models and training
PREDICTIONS = ("eps", "x0", "v")  # what a network outputs
SCHEDULES = ("linear", "cosine")
ARCHS = ("unet", "course")
PRECISIONS = ("fp32", "bf16")  # bf16 autocasts the network
BACKENDS = ("auto", "torch", "onnx")  # what runs a loaded network; auto: onnxruntime for a folder with model.onnx
EXPORT_FORMATS = ("onnx", "web")  # tinydiffusion export --format
DISTILL_METHODS = ("progressive", "consistency")
FINETUNE_METHODS = ("lora", "column", "full")  # finetune: LoRA + new column, the new column only, every weight
FINETUNE_MINUTES = 3.5  # a fine-tune's default budget: with its report, the shipped sprites learn a class in 5 minutes
ADAPTER_METHODS = ("lora", "column")  # the methods whose export is an adapter (a base model + small deltas)

# ---------------------------------------------------------------------- contexts
CONTEXT_KINDS = ("none", "class", "text", "vector")
NULL_WORDS = ("", "none", "null", "uncond", "unconditional")  # what a context string reads as "no context"
NAME_SEPARATORS = (",", "+", "=")  # what mixtures split on, so no class name may hold them

CAPTION_SEPARATOR = "|"  # between a data set's alternative captions of one image (``alt_captions``)
HELD_OUT = 1  # a data set's ``split`` value for images kept out of training, for measuring (0: training)

# ---------------------------------------------------------------------- limits
MAX_T = 100_000  # diffusion steps: 1000 is usual, 4000 rare
MAX_WIDTH = 16_384  # context vector width (text encoders: 384 to 4096)
MAX_TOKENS = 32  # token rows of a text context after its pooled row: (1 + 32) · 384 fits MAX_WIDTH
MAX_NAMES = 10_000  # class names
MAX_CAPTIONS = 8_192  # distinct training captions a text model's card lists (for snap); more are not listed
MAX_IMAGE_SIZE = 1024  # pixels per side: far above what these models train at (16-64), below what breaks RAM
MAX_SEED = 2**63 - 1  # torch generators take seeds in [0, 2**64); keep seed + n below that
