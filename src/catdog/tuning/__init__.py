"""`catdog tune`: a Bayesian search (Optuna) whose every trial is a DVC experiment and an MLflow child run."""
