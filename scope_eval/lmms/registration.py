"""lmms-eval model registration, read through the ``lmms_eval.models`` entry point in pyproject.toml.

Kept import-light: lmms-eval loads this on every start, and the wrapper classes (torch, transformers,
the llava package) are only imported when ``--model llava_scope`` / ``llava_hf_scope`` / ``qwen2_vl_scope`` /
``qwen2_5_vl_scope`` is used. Each pruned model takes the path (simple or chat) that ``--model <upstream id>``
resolves to, so its prompts are upstream's: qwen2_vl has a simple wrapper only, qwen2_5_vl resolves to chat.
"""

from lmms_eval.models.registry_v2 import ModelManifest

MANIFESTS = [
    ModelManifest(model_id="llava_scope", simple_class_path="scope_eval.lmms.models.llava_scope.LlavaScope"),
    ModelManifest(model_id="llava_hf_scope", chat_class_path="scope_eval.lmms.models.llava_hf_scope.LlavaHfScope"),
    ModelManifest(model_id="qwen2_vl_scope", simple_class_path="scope_eval.lmms.models.qwen2_vl_scope.Qwen2VlScope"),
    ModelManifest(
        model_id="qwen2_5_vl_scope", chat_class_path="scope_eval.lmms.models.qwen2_5_vl_scope.Qwen2_5VlScope"
    ),
]
