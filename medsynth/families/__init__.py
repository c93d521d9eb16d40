"""Model families: each supplies networks, optimisers, samples and a ``train_step`` to the one engine."""
