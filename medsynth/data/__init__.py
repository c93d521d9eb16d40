"""From files on disk to normalised tensors on the model's grid, and back."""
