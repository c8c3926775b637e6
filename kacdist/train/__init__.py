"""Training loops as functions of (config, run dir, model, batches): the distributed and scheduler layers
wrap them unchanged."""
