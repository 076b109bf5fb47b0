"""Training recipes, trainer, evaluation and the reproduction of the shipped weights."""
