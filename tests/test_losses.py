"""The adversarial losses against values worked out by hand (Goodfellow et al. 2014; Mao et al. 2017;
Lim & Ye 2017 for the hinge form)."""

from __future__ import annotations

import math

import pytest
import torch

from medsynth.losses.adversarial import GanLoss, discriminator_loss, generator_loss

REAL = torch.tensor([2.0, 0.5])
FAKE = torch.tensor([-1.0, 0.5])


@pytest.mark.parametrize(("kind", "expected"), [
    # ½·(mean((2−1)², (0.5−1)²) + mean((−1)², 0.5²)) = ½·(0.625 + 0.625)
    (GanLoss.LSGAN, 0.625),
    # mean(relu(1−2), relu(1−0.5)) + mean(relu(1−1), relu(1+0.5)) = 0.25 + 0.75
    (GanLoss.HINGE, 1.0),
])
def test_discriminator_loss_by_hand(kind: GanLoss, expected: float) -> None:
    assert discriminator_loss(REAL, FAKE, kind).item() == pytest.approx(expected, abs=1e-6)


def test_vanilla_losses_by_hand() -> None:
    logit = torch.tensor([math.log(3.0)])  # sigmoid = 3/4
    # D: ½·(−log ¾ − log(1 − ¾)) = ½·(log 4/3 + log 4)
    assert discriminator_loss(logit, logit, GanLoss.VANILLA).item() == pytest.approx(
        0.5 * (math.log(4 / 3) + math.log(4.0)), abs=1e-6)
    # G, non-saturating: −log ¾
    assert generator_loss(logit, GanLoss.VANILLA).item() == pytest.approx(math.log(4 / 3), abs=1e-6)


@pytest.mark.parametrize(("kind", "expected"), [
    (GanLoss.LSGAN, 2.125),  # mean((−1−1)², (0.5−1)²) = (4 + 0.25) / 2
    (GanLoss.HINGE, 0.25),   # −mean(−1, 0.5)
])
def test_generator_loss_by_hand(kind: GanLoss, expected: float) -> None:
    assert generator_loss(FAKE, kind).item() == pytest.approx(expected, abs=1e-6)

