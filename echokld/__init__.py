"""echokld: U-Net left-ventricle segmentation with intensity-distribution constraints (JAX/Flax)."""

__version__ = "0.1.0"
