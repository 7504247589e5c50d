"""Files: atomic writes, the one-writer lock, fingerprints.

The bottom layer, below every stage and the trainer: it knows nothing of
faces, workspaces or runs.
"""
