"""Training: the published recipe (``train``), distillation (``distill``), BERT conversion, model cards
and data augmentation."""
