"""Evaluation: inference with flip test, COCO AP (pycocotools), MPII PCKh. No torch."""
