"""Networks: MONAI's where MONAI has them, ours where it does not (FastGAN blocks, the VA-GAN critic)."""
