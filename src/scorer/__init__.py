"""scorer: a SageMaker multi-model server for creative-scoring PyTorch models."""

__version__ = "0.1.0"
