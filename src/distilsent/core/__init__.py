"""The bottom layer: model resolution, tokenization, engines, post-processing and ``Classifier``.

Nothing here imports from the rest of distilsent; everything else is a caller of its public names.
"""
