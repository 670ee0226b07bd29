"""Training: the block-diffusion objective (DESIGN.md section 3), data, and the training loop."""
from .objective import diffusion_loss, corrupt, split_canvases  # noqa: F401
