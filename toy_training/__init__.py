"""How the shipped toy LLaVA weights (scope_eval/toy/weights) were trained, and the probes used to check them.

Not part of the installed package: the library and the harness only need the weights, the model
builder and the benchmark generator, which stay in scope_eval.toy. Run from the repository root,
e.g. ``python -m toy_training.train`` (see scope_eval/toy/weights/MODEL_CARD.md).
"""
