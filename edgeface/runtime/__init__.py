"""The on-board runtime: interpreter, detection, alignment, embedding, matching.

Nothing here imports TensorFlow; a board needs only numpy, OpenCV and a TFLite
interpreter (ai-edge-litert or tflite-runtime).
"""
