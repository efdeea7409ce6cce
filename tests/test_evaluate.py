"""kNN and linear-probe evaluation against float64 NumPy references."""
import jax
import numpy as np
import pytest

from jaxssl.evaluate.knn import knn_accuracy, knn_classify
from jaxssl.evaluate.linear_probe import (
    linear_logits,
    linear_probe_accuracy,
    linear_probe_loss,
    train_linear_probe,
)


def knn_reference(train_feats, train_labels, test_feats, num_classes, k, temperature):
    """float64 weighted kNN: predictions [M], neighbour-boundary gaps [M], vote margins [M].

    The gap is sim(k-th) - sim(k+1-th) neighbour; the margin is
    (best vote - second vote) / best vote. Both small means a near-tie.
    """
    train = train_feats / np.linalg.norm(train_feats, axis=1, keepdims=True)
    test = test_feats / np.linalg.norm(test_feats, axis=1, keepdims=True)
    similarity = test @ train.T
    order = np.argsort(-similarity, axis=1)
    sorted_sim = np.take_along_axis(similarity, order, axis=1)
    votes = np.zeros((len(test), num_classes))
    for row in range(len(test)):
        for j in order[row, :k]:
            votes[row, train_labels[j]] += np.exp(similarity[row, j] / temperature)
    top_two = np.sort(votes, axis=1)[:, -2:]
    margins = (top_two[:, 1] - top_two[:, 0]) / top_two[:, 1]
    return votes.argmax(axis=1), sorted_sim[:, k - 1] - sorted_sim[:, k], margins


# At 0.01, exp(1 / temperature) would overflow float32 without the max shift.
@pytest.mark.parametrize("temperature", [0.07, 0.01])
def test_knn_matches_float64_reference(temperature):
    rng = np.random.default_rng(0)
    num_classes, k = 5, 10
    train_feats = rng.normal(size=(200, 16))
    train_labels = rng.integers(0, num_classes, 200)
    test_feats = rng.normal(size=(50, 16))
    expected, gaps, margins = knn_reference(
        train_feats, train_labels, test_feats, num_classes, k, temperature
    )
    clear = (gaps > 1e-4) & (margins > 1e-3)  # float32 cannot decide near-ties.
    assert clear.sum() >= 40

    # 50 test points in chunks of 16: the last chunk is padded.
    predictions = knn_classify(
        train_feats.astype(np.float32),
        train_labels,
        test_feats.astype(np.float32),
        num_classes,
        k=k,
        temperature=temperature,
        batch_size=16,
    )
    assert predictions.shape == (50,) and predictions.dtype == np.int32
    np.testing.assert_array_equal(predictions[clear], expected[clear])


def test_knn_classifies_well_separated_clusters_perfectly():
    rng = np.random.default_rng(1)
    centres = 5.0 * np.eye(4, 8)
    train_labels = np.repeat(np.arange(4), 30)
    test_labels = np.repeat(np.arange(4), 10)
    train_feats = centres[train_labels] + 0.3 * rng.normal(size=(120, 8))
    test_feats = centres[test_labels] + 0.3 * rng.normal(size=(40, 8))
    accuracy = knn_accuracy(train_feats, train_labels, test_feats, test_labels, 4, k=5)
    assert accuracy == 1.0


def linearly_separable(rng, num_examples, true_weights, offset, scale):
    """Features (offset + scale * normal) labelled by argmax of a linear map, margin >= 1."""
    feats = offset + scale * rng.normal(size=(4 * num_examples, true_weights.shape[0]))
    logits = ((feats - offset) / scale) @ true_weights
    top_two = np.sort(logits, axis=1)[:, -2:]
    keep = (top_two[:, 1] - top_two[:, 0]) >= 1.0
    return feats[keep][:num_examples].astype(np.float32), logits[keep][:num_examples].argmax(1)


@pytest.fixture(scope="module")
def separable_data():
    rng = np.random.default_rng(2)
    dim, num_classes = 16, 4
    true_weights = rng.normal(size=(dim, num_classes))
    # Offsets and scales far from 0/1, so training needs the standardisation.
    offset, scale = rng.uniform(-20, 20, dim), rng.uniform(0.1, 10, dim)
    train = linearly_separable(rng, 400, true_weights, offset, scale)
    test = linearly_separable(rng, 200, true_weights, offset, scale)
    return train, test, num_classes


@pytest.mark.parametrize("hparams", [{}, {"optimizer": "sgd", "lr": 0.3}])
def test_linear_probe_learns_separable_data_on_raw_features(separable_data, hparams):
    (train_x, train_y), (test_x, test_y), num_classes = separable_data
    params = train_linear_probe(train_x, train_y, num_classes, epochs=50, **hparams)
    predictions = np.argmax(test_x @ np.asarray(params["kernel"]) + np.asarray(params["bias"]), 1)
    assert np.mean(predictions == test_y) > 0.95
    accuracy = linear_probe_accuracy(
        train_x, train_y, test_x, test_y, num_classes, epochs=50, **hparams
    )
    assert accuracy == np.mean(predictions == test_y)


def test_linear_probe_is_deterministic_given_seed(separable_data):
    (train_x, train_y), _, num_classes = separable_data
    first, again, other_seed = (
        train_linear_probe(train_x, train_y, num_classes, epochs=50, seed=seed)
        for seed in (0, 0, 1)
    )
    for name in ("kernel", "bias"):
        np.testing.assert_array_equal(np.asarray(first[name]), np.asarray(again[name]))
    assert not np.array_equal(np.asarray(first["kernel"]), np.asarray(other_seed["kernel"]))


def test_linear_probe_loss_gradient_matches_softmax_cross_entropy_reference():
    rng = np.random.default_rng(3)
    feats, kernel, bias = rng.normal(size=(7, 5)), rng.normal(size=(5, 3)), rng.normal(size=3)
    labels = rng.integers(0, 3, 7)

    logits = feats @ kernel + bias
    log_probs = logits - logits.max(1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(1, keepdims=True))
    one_hot = np.eye(3)[labels]
    expected_loss = -np.mean(np.sum(one_hot * log_probs, axis=1))
    residual = (np.exp(log_probs) - one_hot) / len(feats)  # dLoss/dlogits

    params = {"kernel": kernel.astype(np.float32), "bias": bias.astype(np.float32)}
    loss_and_grad = jax.jit(jax.value_and_grad(linear_probe_loss))
    loss, grads = loss_and_grad(params, feats.astype(np.float32), labels)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-6)
    np.testing.assert_allclose(grads["kernel"], feats.T @ residual, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grads["bias"], residual.sum(0), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("evaluate", [knn_classify, train_linear_probe])
def test_labels_outside_num_classes_are_rejected(evaluate):
    feats = np.random.default_rng(4).normal(size=(6, 3)).astype(np.float32)
    labels = np.array([0, 1, 2, 3, 1, 0])
    args = (feats, labels, feats, 3) if evaluate is knn_classify else (feats, labels, 3)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        evaluate(*args)


def test_probe_logits_are_full_float32_products_whatever_the_platform_default():
    # With the standardisation folded into the weights, x @ kernel and the bias nearly
    # cancel for a feature whose |mean| is many standard deviations: a TPU's default
    # one-pass bfloat16 product would round the signal away.
    params = {"kernel": np.ones((4, 3), np.float32), "bias": np.zeros(3, np.float32)}
    with jax.default_matmul_precision("bfloat16"):
        jaxpr = jax.make_jaxpr(linear_logits)(params, np.ones((2, 4), np.float32))
    products = [e for e in jaxpr.eqns if e.primitive.name == "dot_general"]
    highest = jax.lax.Precision.HIGHEST
    assert [e.params["precision"] for e in products] == [(highest, highest)]
