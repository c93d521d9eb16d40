"""medsynth: MRI-to-CT translation, abnormality maps and CT-slice generation with GANs."""

__version__ = "0.1.0"
