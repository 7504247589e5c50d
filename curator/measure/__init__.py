"""Measures of one face from its keypoints and pixels: alignment (`align`), head pose (`pose`), expression,
lighting and quality (`descriptors`), and the bins and thresholds that give them meaning across the project
(`metrics`: pose bins, plausible ranges, what counts as a thin bin or a small face).

Pure functions over arrays: no files, no models. The layer every stage and the trainer may use.
"""
