"""Hyperparameter sweeps on Ray Tune: search spaces as data (tune_spaces/), trials that run Ray Train stages."""
