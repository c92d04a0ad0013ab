"""Model provisioning (manifest, fetch, verified graph fixes) and the ONNX Runtime runner."""
