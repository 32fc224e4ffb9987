"""sigest: offline handwritten signature verification with scikit-learn and skorch estimators."""
__version__ = "0.1.0"
