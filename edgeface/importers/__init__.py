"""Importers: pretrained face models from other toolkits rebuilt as edgeface models.

``dlib_dat`` reads dlib's face recognition ResNet (the ``.dat`` file that
``face_recognition`` uses) with numpy alone; ``dlib_keras`` rebuilds it as a
Keras model with edgeface's conventions (raw RGB pixels in, unit embedding out).
Nothing is imported here: ``import edgeface.importers.dlib_dat`` stays free of
TensorFlow and dlib.
"""
