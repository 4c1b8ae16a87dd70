"""Probes trained on frozen features: linear (paper 1 and 2) and attentive fusion (paper 2)."""
