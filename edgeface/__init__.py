"""edgeface: face recognition from the workstation to the edge board.

Importing the package is cheap: no TensorFlow, no model loading.  Heavy work
lives in the sub-modules and in the commands that need it.
"""

__version__ = "0.1.0"
