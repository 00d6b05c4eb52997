"""TFLite conversion and quantization of edgeface embedding models (installed as ``edgeface.converters``).

TensorFlow is imported inside the functions that convert, never at import time.
"""
