"""cifarlab: train, compare, inspect and ship small-image classifiers."""
