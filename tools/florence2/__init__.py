"""Florence-2 for serving: a scriptable model, its export, tokenizer build and reference generation.

Importing the package registers the project's Torch operators (see ops.py), which exported artefacts call.
"""
from . import ops

ops.load()
