"""``process_results`` of the benchmarks scored exactly as lmms-eval scores them, plus visual tokens."""

from __future__ import annotations

from lmms_eval.tasks.mmbench import en_utils as mmbench
from lmms_eval.tasks.mmmu import utils as mmmu
from lmms_eval.tasks.pope import utils as pope
from lmms_eval.tasks.scienceqa import utils as scienceqa
from lmms_eval.tasks.textvqa import utils as textvqa
from lmms_eval.tasks.vqav2 import utils as vqav2

from scope_eval.lmms.visual_tokens import with_visual_tokens

mmbench_en_dev = with_visual_tokens(mmbench.mmbench_process_results)
mmmu_val = with_visual_tokens(mmmu.mmmu_process_results)
pope = with_visual_tokens(pope.pope_process_results)
scienceqa_img = with_visual_tokens(scienceqa.sqa_process_results)
textvqa_val = with_visual_tokens(textvqa.textvqa_process_results)
vqav2_val = with_visual_tokens(vqav2.vqav2_process_results_val)
