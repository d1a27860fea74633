"""Data: keypoint specs, COCO / MPII / synthetic datasets, transforms, heatmap codec (no torch)."""
