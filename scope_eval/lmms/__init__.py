"""lmms-eval glue: the registered models ``llava_scope`` / ``llava_hf_scope`` (registration.py), the task
include directory (tasks/), local copies of the benchmarks (local_data.py) and task validation.

Kept empty of imports: lmms-eval imports ``scope_eval.lmms.registration`` on every start."""
