"""MLflow: the store, a stage's run, the logged MLflow Model, the registry, checkpoints from runs."""
