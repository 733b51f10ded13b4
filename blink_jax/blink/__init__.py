"""Blink: saliency-guided scanning and dynamic token resolution on a fixed-capacity slot layout."""
