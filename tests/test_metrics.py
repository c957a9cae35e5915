"""The metric functions against hand-computed cases and closed-form Gaussian distances."""

import numpy as np
import pytest

from gcd_jax.evaluation import metrics


def test_confusion_matrix_counts_pairs_and_skips_ignored_reference():
    reference = np.array([[0, 0, 1], [1, 2, 2]])
    prediction = np.array([[0, 1, 1], [2, 2, 0]])
    expected = np.array([[1, 1, 0], [0, 1, 1], [1, 0, 1]])
    np.testing.assert_array_equal(metrics.confusion_matrix(reference, prediction, 3), expected)
    # Reference pixels of class 2 are ignored; a *prediction* of 2 elsewhere still counts.
    expected_ignoring = np.array([[1, 1, 0], [0, 1, 1], [0, 0, 0]])
    np.testing.assert_array_equal(
        metrics.confusion_matrix(reference, prediction, 3, ignore_class=2), expected_ignoring
    )


def test_alignment_by_hand():
    # Sample 0: layout [[1,1],[2,2]] vs segmentation [[1,2],[2,2]].
    #   class 1: TP 1, FN 1, FP 0 -> 1/2; class 2: TP 2, FP 1 -> 2/3; class 0 absent -> excluded.
    # Sample 1: identical maps of class 0 -> class 0 IoU 1, classes 1, 2 absent.
    layouts = np.array([[[1, 1], [2, 2]], [[0, 0], [0, 0]]])
    segmented = np.array([[[1, 2], [2, 2]], [[0, 0], [0, 0]]])
    result = metrics.alignment(layouts, segmented, num_classes=3)
    np.testing.assert_allclose(result["per_class_iou"], [1.0, 1 / 2, 2 / 3])
    assert result["miou"] == pytest.approx((1 + 1 / 2 + 2 / 3) / 3)
    assert result["pixel_accuracy"] == pytest.approx(7 / 8)
    np.testing.assert_allclose(result["sample_miou"], [(1 / 2 + 2 / 3) / 2, 1.0])


def test_alignment_ignore_class_and_absent_classes_leave_the_mean():
    # Class 3 is the ignore class: its reference pixels drop out, and it gets no IoU.
    layouts = np.array([[[3, 3, 1, 1]]])
    segmented = np.array([[[1, 0, 1, 3]]])
    result = metrics.alignment(layouts, segmented, num_classes=4, ignore_class=3)
    # Counted pixels: (1 -> 1), (1 -> 3). Class 1: TP 1, FN 1 -> 1/2. Classes 0, 2 absent.
    assert np.isnan(result["per_class_iou"][[0, 2, 3]]).all()
    assert result["per_class_iou"][1] == pytest.approx(0.5)
    assert result["miou"] == pytest.approx(0.5)
    assert result["pixel_accuracy"] == pytest.approx(0.5)


def test_present_classes_threshold():
    labels = np.array([[[0, 0, 0, 1], [0, 0, 2, 2]]])  # 8 pixels: class 1 once, class 2 twice.
    np.testing.assert_array_equal(
        metrics.present_classes(labels, 4, min_fraction=0.25), [[True, False, True, False]]
    )
    np.testing.assert_array_equal(
        metrics.present_classes(labels, 4, min_fraction=0.1), [[True, True, True, False]]
    )


def test_named_classes_uses_the_parser():
    named = metrics.named_classes(["a b", "c"], lambda t: [ord(w) - ord("a") for w in t.split()], 3)
    np.testing.assert_array_equal(named, [[True, True, False], [False, False, True]])


def test_recall_precision_by_hand():
    nameable = np.array([False, True, True, True])  # class 0 = background
    named = np.array([[0, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]], bool)
    present = np.array([[1, 1, 0, 1], [1, 0, 0, 1], [1, 0, 0, 0]], bool)
    result = metrics.recall_precision(named, present, nameable)
    # Hits: 1 + 1; named: 2 + 1; present (nameable): 2 + 1 + 0.
    assert result["recall"] == pytest.approx(2 / 3)
    assert result["precision"] == pytest.approx(2 / 3)
    np.testing.assert_allclose(result["sample_recall"], [0.5, 1.0, np.nan])
    np.testing.assert_allclose(result["sample_precision"], [0.5, 1.0, np.nan])


def test_frechet_equal_covariances_is_squared_mean_distance():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 4))
    sigma = a @ a.T + 0.1 * np.eye(4)
    mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
    assert metrics.frechet_distance(mu1, sigma, mu2, sigma) == pytest.approx(
        np.sum((mu1 - mu2) ** 2), rel=1e-9, abs=1e-9
    )


def test_frechet_diagonal_covariances():
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.0])
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert metrics.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected)


def test_frechet_rotated_diagonal_is_invariant():
    # Rotating both Gaussians by the same orthogonal matrix leaves the distance unchanged; this
    # checks the non-commuting path (Σ1 Σ2 not symmetric once rotated differently below).
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    a, b = np.array([2.0, 0.5, 3.0]), np.array([1.0, 1.5, 0.1])
    expected = np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = metrics.frechet_distance(
        np.zeros(3), q @ np.diag(a) @ q.T, np.zeros(3), q @ np.diag(b) @ q.T
    )
    assert got == pytest.approx(expected)
    # 1-D non-aligned 2x2 case by hand: Σ1 = I, Σ2 = [[2,1],[1,2]] (eigenvalues 1, 3).
    s2 = np.array([[2.0, 1.0], [1.0, 2.0]])
    closed = 2 + 4 - 2 * (1 + np.sqrt(3))
    assert metrics.frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), s2) == pytest.approx(
        closed
    )


def test_fid_of_a_set_with_itself_is_zero_and_shift_gives_mean_distance():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(50, 3))
    identity = lambda images: images  # noqa: E731
    assert metrics.fid(x, x, identity) == pytest.approx(0.0, abs=1e-9)
    assert metrics.fid(x, x + np.array([1.0, 2.0, 0.0]), identity) == pytest.approx(5.0)


def test_colour_pixel_features_by_hand():
    # One 4x4 image: left half pure red (1, -1, -1), right half black (-1, -1, -1).
    image = -np.ones((1, 4, 4, 3))
    image[0, :, :2, 0] = 1.0
    features = metrics.colour_pixel_features(image, grid=2, bins=2)
    thumb, hist = features[0, :12].reshape(2, 2, 3), features[0, 12:]
    np.testing.assert_allclose(thumb[:, 0], [[1, -1, -1], [1, -1, -1]])  # left column, both rows
    np.testing.assert_allclose(thumb[:, 1], [[-1, -1, -1], [-1, -1, -1]])
    expected_hist = np.zeros(8)
    expected_hist[0b100] = 0.5  # red bin 1, green 0, blue 0
    expected_hist[0] = 0.5
    np.testing.assert_allclose(hist, expected_hist)
    with pytest.raises(ValueError, match="divisible"):
        metrics.colour_pixel_features(np.zeros((1, 5, 4, 3)), grid=2)
