"""probekit: which ViT layer and module gives the best frozen features for your data."""

__version__ = "0.1.0"
