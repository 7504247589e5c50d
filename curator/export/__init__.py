"""Exports: a folder of crops with a manifest and provenance (`folder`), and the faceswap, DeepFaceLab and
FiftyOne layouts (`formats`).
"""
