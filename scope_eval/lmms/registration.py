"""lmms-eval model registration, read through the ``lmms_eval.models`` entry point in pyproject.toml.

Kept import-light: lmms-eval loads this on every start, and the wrapper classes (torch, transformers,
the llava package) are only imported when ``--model llava_scope`` / ``llava_hf_scope`` is used.
"""

from lmms_eval.models.registry_v2 import ModelManifest

MANIFESTS = [
    ModelManifest(model_id="llava_scope", simple_class_path="scope_eval.lmms.models.llava_scope.LlavaScope"),
    ModelManifest(model_id="llava_hf_scope", chat_class_path="scope_eval.lmms.models.llava_hf_scope.LlavaHfScope"),
]
