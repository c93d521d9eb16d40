"""The inference core, below the engine and the families: model grid, normalisation, sliding windows,
blending, TTA and MC passes, ensembles, VA-GAN's map generator, engines (torch, onnxruntime) and the generation
core."""
