"""The Keras side of an edgeface model, shared by training, distillation, import, evaluation and export:
its custom layers (:mod:`.layers`) and reading a ``.keras`` file (:mod:`.loading`).  Imports Keras: load lazily."""
