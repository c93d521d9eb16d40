"""CycleGAN's cycle and identity losses and the shape-consistency loss of Zhang, Yang & Zheng (CVPR 2018).

Notation (Zhang et al.): domains X (MR) and Y (CT); generators G: X → Y and F: Y → X; segmenters
S_X and S_Y, each trained on its own domain's labelled images; ``m_x`` is the label map of an MR
image x. Means run over every voxel of the batch. Each function covers one direction; the family
adds the mirror term (swap X and Y, G and F).
"""

from __future__ import annotations

import torch.nn.functional as F
from monai.losses import DiceCELoss
from torch import Tensor, nn

# Batch Dice (sums over the batch as well as space): a label absent from one small 2D slice then
# does not dominate the loss, as in nnU-Net. Softmax over K logits; labels arrive as (B, 1, ...).
_DICE_CE = DiceCELoss(to_onehot_y=True, softmax=True, batch=True, smooth_nr=1e-5, smooth_dr=1e-5)


def cycle_consistency_loss(reconstructed: Tensor, real: Tensor) -> Tensor:
    """L_cyc = E_x ‖F(G(x)) − x‖₁, the mean absolute error of the round trip (Zhu et al., 2017).

    ``reconstructed`` is F(G(x)), ``real`` is x. CycleGAN weights it by λ_cyc = 10 per direction.
    """
    return F.l1_loss(reconstructed.float(), real.float())


def identity_loss(mapped: Tensor, real: Tensor) -> Tensor:
    """L_idt = E_y ‖G(y) − y‖₁: a generator fed an image of its *target* domain should leave it alone.

    ``mapped`` is G(y), ``real`` is y. Zhu et al. use it for photo ↔ painting colour fidelity; across
    modalities (an MR is no CT) it pulls the mapping towards the identity, hence off by default.
    """
    return F.l1_loss(mapped.float(), real.float())


def segmentation_loss(logits: Tensor, labels: Tensor, labelled: Tensor | None = None) -> Tensor:
    """L_seg = CE(S(x), m) + Dice(S(x), m), the segmenters' objective on labelled images.

    With p = softmax(S(x)) over K labels, g the one-hot labels and v running over batch and space:
        CE   = −(1/N)·Σ_v log p_{v, m_v}
        Dice = 1 − (1/K)·Σ_k (2·Σ_v p_vk·g_vk + ε) / (Σ_v p_vk + Σ_v g_vk + ε),  ε = 1e-5.
    ``logits`` (B, K, *spatial), ``labels`` (B, 1, *spatial) integer. Only samples whose ``labelled``
    flag (B,) is set count; without any, the loss is zero but keeps the graph, so that every process
    of a distributed run still takes the same backward pass.
    """
    if labelled is not None:
        if not bool(labelled.any()):
            return logits.sum() * 0.0
        logits, labels = logits[labelled], labels[labelled]
    return _DICE_CE(logits.float(), labels)


def shape_consistency_loss(segmenter: nn.Module, translated: Tensor, source_labels: Tensor,
                           labelled: Tensor | None = None) -> Tensor:
    """L_shape(S_Y, G) = [CE + Dice](S_Y(G(x)), m_x): the translated image keeps x's anatomy.

    The segmenter of the *target* domain must find the source image's labels in its translation.
    Zhang et al. state the cross-entropy term; the Dice term is added as for the segmenters
    themselves (:func:`segmentation_loss`). ``translated`` is G(x), ``source_labels`` m_x; samples
    without labels (``labelled`` false) still feed the adversarial and cycle losses but not this one.
    """
    return segmentation_loss(segmenter(translated), source_labels, labelled)
