"""WiSE-FT (`jaxssl.evaluate.wise_ft`) and the forgetting measure
(`jaxssl.evaluate.forgetting`), called directly on a tiny linear encoder."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl import parallel
from jaxssl.data.sources import ArraySource
from jaxssl.evaluate import forgetting, wise_ft
from jaxssl.evaluate.classification import top_k_accuracy

from test_evaluate import knn_reference

EVAL = {"batch_size": 16, "knn_k": 5, "knn_temperature": 0.1}
PIXELS, FEATURES, CLASSES = 12, 6, 3


def linear_variables(seed: int) -> dict:
    """{'params': {'backbone': {'w' [PIXELS, FEATURES]}, 'head': {'w' [FEATURES, CLASSES]}}}."""
    rng = np.random.default_rng(seed)
    return {"params": {"backbone": {"w": jnp.asarray(rng.normal(size=(PIXELS, FEATURES)),
                                                     jnp.float32)},
                       "head": {"w": jnp.asarray(rng.normal(size=(FEATURES, CLASSES)),
                                                 jnp.float32)}}}


@jax.jit
def features(variables, images):
    """uint8 images [B, 2, 2, 3] -> float32 [B, FEATURES]."""
    x = images.reshape(images.shape[0], -1).astype(jnp.float32) / 255.0
    return x @ variables["params"]["backbone"]["w"]


def labelled_images(seed: int, count: int):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (count, 2, 2, 3), dtype=np.uint8),
            rng.integers(0, CLASSES, count).astype(np.int32))


def test_wise_ft_endpoints_are_the_pretrained_and_the_finetuned_model():
    images, labels = labelled_images(0, 64)

    def accuracy(variables):
        logits = features(variables, images) @ variables["params"]["head"]["w"]
        return top_k_accuracy(np.asarray(logits), labels, 1)

    finetuned, start = linear_variables(1), linear_variables(2)
    pretrained = wise_ft.encoder_variables(start)
    scores = wise_ft.evaluate_wise_ft(accuracy, finetuned, pretrained, (0.0, 0.5, 1.0))
    assert scores[0.0] == accuracy(wise_ft.with_encoder(finetuned, pretrained))
    assert scores[1.0] == accuracy(finetuned)
    half = wise_ft.wise_ft_variables(finetuned, pretrained, 0.5)["params"]
    np.testing.assert_allclose(half["backbone"]["w"], 0.5 * (start["params"]["backbone"]["w"]
                                                             + finetuned["params"]["backbone"]["w"]),
                               rtol=1e-6)
    np.testing.assert_array_equal(half["head"]["w"], finetuned["params"]["head"]["w"])
    # with the head's starting parameters (LP-FT's probed head) the head mixes too
    with_head = wise_ft.evaluate_wise_ft(accuracy, finetuned, pretrained, (0.0,),
                                         start_params={"head": start["params"]["head"]})
    assert with_head[0.0] == accuracy(start)
    half = wise_ft.wise_ft_variables(finetuned, pretrained, 0.5,
                                     start_params={"head": start["params"]["head"]})["params"]
    np.testing.assert_allclose(half["head"]["w"], 0.5 * (start["params"]["head"]["w"]
                                                         + finetuned["params"]["head"]["w"]),
                               rtol=1e-6)


def test_forgetting_of_identical_encoders_is_zero_and_of_a_damaged_one_positive():
    mesh = parallel.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
    train_images, train_labels = labelled_images(3, 96)
    # Classes of the reference set are colours: a linear encoder can tell them apart.
    train_images = (train_images // 4 + 60 * train_labels[:, None, None, None]).astype(np.uint8)
    reference = forgetting.ReferenceSet(ArraySource(train_images[:64], train_labels[:64], CLASSES),
                                        ArraySource(train_images[64:], train_labels[64:], CLASSES))
    encoder = linear_variables(4)
    same = forgetting.forgetting(features, encoder, encoder, reference, mesh, EVAL)
    # The float64 kNN of the encoder's features: the test images' neighbours among the
    # train images.
    w = np.asarray(encoder["params"]["backbone"]["w"], np.float64)
    feats = train_images.reshape(len(train_images), -1) / 255.0 @ w
    predicted, _, _ = knn_reference(feats[:64], train_labels[:64], feats[64:], CLASSES,
                                    EVAL["knn_k"], EVAL["knn_temperature"])
    expected = float(np.mean(predicted == train_labels[64:]))
    assert expected > 0.5
    assert same["forgetting"] == 0.0
    assert same["knn_before"] == same["knn_after"] == pytest.approx(expected)
    damaged = jax.tree.map(lambda w: w * 0.0, encoder)
    measure = forgetting.forgetting(features, encoder, damaged, reference, mesh, EVAL)
    assert measure["forgetting"] == measure["knn_before"] - measure["knn_after"] > 0
