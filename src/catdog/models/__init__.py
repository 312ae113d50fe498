"""The architectures: their registration (registry.py, no torch) and their builders."""
