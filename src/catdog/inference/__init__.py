"""Forward passes without gradients, in PyTorch or ONNX Runtime, and image files to labels."""
