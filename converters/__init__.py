"""TFLite conversion, quantization and Edge TPU checks for ``edgeface export``.

Installed as ``edgeface.converters``.  Importing the package is cheap: TensorFlow
is imported only inside the functions that convert or calibrate, so the
pure-numpy parts (format table, graph reader, Edge TPU rules, manifest helpers)
work on a board without it.
"""
