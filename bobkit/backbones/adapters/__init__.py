"""Modules for the backbones timm cannot build by name, with timm's interface (forward_features,
forward_head, reset_classifier, forward_intermediates, feature_info), so that the task runners
treat every backbone alike; plus the multi-scale feature wrapper used by detection."""
