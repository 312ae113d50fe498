"""The DVC stage scripts, one per stage of dvc.yaml; each runs as a file (python src/stages/NAME.py)."""
