"""Reports as offline HTML pages: `page` (the shared page, plots and thumbnails), `audit` (what a set
covers and lacks), `compare` (a set against a target), `evaluate` (a trained model, per head pose).
"""
