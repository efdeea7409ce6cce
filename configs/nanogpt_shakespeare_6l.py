"""nanoGPT's character-level Shakespeare model: 6 layers, 6 heads, width 384, context 256.

nanoGPT's config/train_shakespeare_char.py: batch 64, 5000 iterations, AdamW
lr 1e-3 (100 warm-up steps, cosine to 1e-4), beta2 0.99, dropout 0.2 (on the
embeddings, each residual branch and the attention weights, as nanoGPT),
weight decay 0.1, gradient clipping 1.0; data as in nanogpt_baby_shakespeare.py.

  python -m jaxssl.main --config=configs/nanogpt_shakespeare_6l.py --workdir=/tmp/lm_runs/6l

Published (nanoGPT README, one A100, about 3 minutes): validation loss 1.47.
One step is about 1 TFLOP, so the full run does not fit a 2-core CPU; see
experiments/language/README.md for what was measured here.
"""

import importlib.util
import os


def _baby_config_module():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nanogpt_baby_shakespeare.py")
    spec = importlib.util.spec_from_file_location("nanogpt_baby_shakespeare", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def get_config(arg=None):
    del arg
    return _baby_config_module().nanogpt_config(layers=6, heads=6, width=384, context=256,
                                                batch=64, steps=5000, dropout=0.2)
