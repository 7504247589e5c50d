"""Applying a trained model: `swapper` (load a run, swap a batch of faces), `convert` (a whole video, labelled
synthetic), `synthetic` (the label: metadata, sidecar and visible mark).
"""
