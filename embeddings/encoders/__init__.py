"""Embedding models: the `Encoder` protocol, its runtimes (torch, int8 ONNX, multilingual E5),
the one-time ONNX export, and `make_encoder`, which picks one for an index."""
