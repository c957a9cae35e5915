"""benchmarks/text_binding.py's score against hand-computed cases."""

import numpy as np

from benchmarks import text_binding


def test_binding_is_one_for_the_named_class_and_chance_for_the_count_alone():
    k = 8
    exact = np.zeros((k - 1, k))
    exact[:, 0] = 0.9
    exact[np.arange(k - 1), np.arange(1, k)] = 0.1  # row i names class i + 1
    assert text_binding.binding(exact) == 1.0
    count_only = np.full((k - 1, k), 0.02)
    count_only[:, 0] = 0.86  # the same object mass on every class, whatever is named
    np.testing.assert_allclose(text_binding.binding(count_only), 1 / (k - 1))
    # Half of each row's object mass on the named class, the rest spread over the other six.
    half = np.full((k - 1, k), 0.5 / 6)
    half[:, 0] = 5.0
    half[np.arange(k - 1), np.arange(1, k)] = 0.5
    np.testing.assert_allclose(text_binding.binding(half), 0.5)
