"""Application services above the families: what a command does end to end (translate, attribute, generate),
with batches over folders and their reports. The CLI calls these; they call the inference core and families."""
