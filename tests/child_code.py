"""Source lines the tests put at the top of a child Python process's code (``python -c``)."""

# TensorFlow made unimportable, as on a JAX-only GPU box: any `import tensorflow...` raises ImportError.
# (Keras' own "tensorflow is optional" checks then take their JAX paths; json and sys come with it.)
BLOCK_TENSORFLOW = (
    "import importlib.abc, json, sys\n"
    "class NoTF(importlib.abc.MetaPathFinder):\n"
    "    def find_spec(self, name, path, target=None):\n"
    "        if name.split('.')[0] == 'tensorflow':\n"
    "            raise ImportError('TensorFlow is blocked in this test')\n"
    "sys.meta_path.insert(0, NoTF())\n"
)
