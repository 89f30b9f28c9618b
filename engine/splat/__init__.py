"""3D Gaussian splatting: rasterization (gsplat on CUDA, pure PyTorch elsewhere) and training."""

from ..errors import Cancelled
from .gaussians import Gaussians, SplatRender
from .rasterize import gsplat_available, rasterize, resolve_backend
from .train import SplatConfig, TrainView, init_gaussians, make_reprojection_views, masked_loss, train_gaussians

__all__ = [
    "Cancelled", "Gaussians", "SplatConfig", "SplatRender", "TrainView", "gsplat_available", "init_gaussians",
    "make_reprojection_views", "masked_loss", "rasterize", "resolve_backend", "train_gaussians",
]
