"""What a model is made from: files, digests, the stat cache, data loading and the config. No torch."""
