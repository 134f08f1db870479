"""Export: the model-directory writer (model_dir); ONNX, OpenVINO, quantization and their parity
checks go here (docs/architecture.md)."""
