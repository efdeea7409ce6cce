"""Image-text evaluation: zero-shot classification and cross-modal retrieval recall.

All functions take embeddings as float arrays [N, D], unnormalised; they are
L2-normalised here and compared by cosine similarity (computed in float64 on
the host, so ties and near-ties resolve the same way on every machine).

- `zero_shot_accuracy`: each image takes the class whose prompt embedding is
  most similar (argmax cosine), as in CLIP's zero-shot protocol.
- `retrieval_recall`: image->text and text->image recall@k. Pair i's image
  and text belong to group i by default (one caption per image: only the
  pair itself is correct). With SYNTHETIC class-name captions every image of
  a class has the same caption, so the group is the label and the texts are
  deduplicated to one per group: image->text R@k is then whether the own
  class's caption is among the k nearest distinct captions (zero-shot top-k),
  and text->image R@k, per distinct caption, whether an image of its class is
  among its k nearest images.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

RECALL_KS = (1, 5)


def _unit(x) -> np.ndarray:
    """float64 rows of x [N, D] scaled to unit L2 norm (zero rows stay zero)."""
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def zero_shot_accuracy(image_embeddings, labels, class_embeddings) -> float:
    """Fraction in [0, 1] of images whose most cosine-similar class prompt is their label.

    Args:
      image_embeddings: [N, D]; labels: int [N] in [0, C);
      class_embeddings: [C, D], row c the embedding of class c's prompt.
    """
    predictions = np.argmax(_unit(image_embeddings) @ _unit(class_embeddings).T, axis=-1)
    return float(np.mean(predictions == np.asarray(labels)))


def _recall_at_k(similarity: np.ndarray, query_groups: np.ndarray, item_groups: np.ndarray,
                 ks: Sequence[int]) -> dict[int, float]:
    """{k: fraction of queries (rows) with an item of their group among their k most similar}."""
    order = np.argsort(-similarity, axis=1, kind="stable")
    hits = item_groups[order] == query_groups[:, None]          # [Q, N] in rank order
    first_hit = np.where(hits.any(axis=1), np.argmax(hits, axis=1), hits.shape[1])
    return {k: float(np.mean(first_hit < k)) for k in ks}


def retrieval_recall(image_embeddings, text_embeddings, groups=None,
                     ks: Sequence[int] = RECALL_KS) -> dict[str, float]:
    """Image->text and text->image recall@k over N image-text pairs (see the module docstring).

    Args:
      image_embeddings, text_embeddings: [N, D], row i of each a pair.
      groups: int [N], pair i's group (same group = a correct match, and the
        same caption: only the first text of each group is kept); None =
        arange(N), only the pair itself is correct.
      ks: the k of recall@k.

    Returns:
      {'i2t_recall@k': ..., 't2i_recall@k': ...} for each k, fractions in [0, 1].
    """
    image, txt = _unit(image_embeddings), _unit(text_embeddings)
    groups = np.arange(len(image)) if groups is None else np.asarray(groups)
    _, first_of_group = np.unique(groups, return_index=True)
    txt, text_groups = txt[first_of_group], groups[first_of_group]
    similarity = image @ txt.T                                   # [N, distinct texts]
    results = {}
    for name, sim, queries, items in (("i2t", similarity, groups, text_groups),
                                      ("t2i", similarity.T, text_groups, groups)):
        for k, recall in _recall_at_k(sim, queries, items, ks).items():
            results[f"{name}_recall@{k}"] = recall
    return results
