"""Knowledge distillation: teach an edgeface student from a stronger face model (``edgeface distill``).

``teachers`` adapts each teacher (dlib, ONNX, TFLite, an edgeface Keras model)
to "original image + detected face -> embedding", ``cache`` keeps the teacher's
embeddings on disk, ``data`` turns a folder of photographs into student crops
and teacher targets, ``losses`` holds the Keras loss and metrics and ``distill``
runs the training with :mod:`edgeface.train`'s loop.  Nothing is imported here:
``import edgeface.distill.teachers`` stays free of TensorFlow.
"""
