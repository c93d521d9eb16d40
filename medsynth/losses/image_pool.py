"""A history of generated images for the discriminators (Shrivastava et al., 2017; CycleGAN's buffer).

Updating D on earlier generator outputs as well as the newest ones keeps it from chasing only the
generator's latest trick, which damps oscillation. The pool stores up to ``size`` images; once it is
full, each incoming image is, with probability ½, swapped for a randomly chosen stored one (the
stored one is returned and the new one takes its place), and otherwise passed through unchanged.

The pool draws from its own seeded ``torch.Generator`` and :meth:`ImagePool.state_dict` carries that
generator's state with the images, so a resumed run makes exactly the choices the original would.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

PAPER_POOL_SIZE = 50
_SWAP_PROBABILITY = 0.5


class ImagePool:
    """The 50-image buffer of CycleGAN (Zhu et al., 2017), one per discriminator."""

    def __init__(self, size: int = PAPER_POOL_SIZE, seed: int = 0) -> None:
        if size < 0:
            raise ValueError(f"an image pool holds a non-negative number of images, got {size}")
        self.size = size
        self.images: list[Tensor] = []
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.images)

    def query(self, images: Tensor) -> Tensor:
        """The batch D should see in place of ``images`` (B, C, *spatial): each item is either the new
        image or, once the pool is full and with probability ½, an older one the pool gives back."""
        if self.size == 0:
            return images
        chosen = [self._exchange(image) for image in images.detach()]
        return torch.stack(chosen).to(images.device)

    def _exchange(self, image: Tensor) -> Tensor:
        if len(self.images) < self.size:
            self.images.append(image.clone())
            return image
        if torch.rand((), generator=self.generator).item() >= _SWAP_PROBABILITY:
            return image
        slot = int(torch.randint(self.size, (), generator=self.generator).item())
        stored = self.images[slot].to(image.device)
        self.images[slot] = image.clone()
        return stored

    def state_dict(self) -> dict[str, Any]:
        """Stored images (on the CPU) and the generator state: tensors only, for ``weights_only`` loads."""
        return {"images": [image.cpu() for image in self.images], "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.images = [image.clone() for image in state["images"]][: self.size]
        self.generator.set_state(state["generator"])
