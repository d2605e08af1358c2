import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

torch.set_num_threads(2)


def random_image(height: int, width: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


@pytest.fixture(scope="session")
def hf_llava():
    from tiny_models import tiny_llava

    return tiny_llava()


@pytest.fixture(scope="session")
def hf_llava_next():
    from tiny_models import tiny_llava_next

    return tiny_llava_next()
