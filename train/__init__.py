"""U²-Net model, checkpoints, data sets, deep-supervision training and SOD metrics."""
