"""What a prefill costs: analytic FLOPs (``flops``) and synchronised clocks and per-part timers (``timing``).

Part of the library (torch and transformers only): the lmms-eval wrappers record every sample's cost
with it, and the benchmark harness (scope_eval.bench) builds on it.
"""
