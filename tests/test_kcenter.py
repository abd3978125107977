import numpy as np
import pytest

from selectllm.cluster.kcenter import assign, farthest_first, first_center

from helpers import normalized, reference_farthest_first


def test_matches_reference():
    x = normalized(500, 16)
    centers, min_dist = farthest_first(x, 25)
    assert centers.tolist() == reference_farthest_first(x, 25, first_center(x))
    expected = (1.0 - x @ x[centers].T).min(axis=1)
    np.testing.assert_allclose(min_dist, np.maximum(expected, 0), atol=1e-5)


def test_radius_shrinks_and_centers_distinct():
    x = normalized(300, 8, seed=1)
    radii = [farthest_first(x, k)[1].max() for k in (1, 5, 20, 80)]
    assert radii == sorted(radii, reverse=True)
    c, _ = farthest_first(x, 80)
    assert len(set(c.tolist())) == 80


def test_duplicates_and_k_larger_than_n():
    x = np.repeat(normalized(3, 4), 4, axis=0)  # 12 rows, 3 distinct points
    c, d = farthest_first(x, 20)
    assert len(c) == 12 and len(set(c.tolist())) == 12
    assert d.max() == pytest.approx(0, abs=1e-6)


def test_initial_centers_are_kept_first():
    x = normalized(100, 8, seed=2)
    c, _ = farthest_first(x, 10, initial=[7, 3])
    assert c[:2].tolist() == [7, 3]


def test_assign_nearest_and_centers_self():
    x = normalized(400, 12, seed=3)
    centers, min_dist = farthest_first(x, 10)
    labels, dist = assign(x, centers, block=64)
    brute = np.argmax(x @ x[centers].T, axis=1)
    brute[centers] = np.arange(10)
    assert (labels == brute).all()
    np.testing.assert_allclose(dist, min_dist, atol=1e-5)
    assert (labels[centers] == np.arange(10)).all()


def test_a_hub_at_the_mean_direction_is_not_the_first_center():
    """A content-poor row whose vector sits at the pool's mean direction (the "test" row of a junk
    pool) was the seed; the seed is now an edge row, and the hub is not among the first centers."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 16)).astype(np.float32) + np.r_[3.0, np.zeros(15)].astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    mean = x.mean(0)
    hub = mean / np.linalg.norm(mean)
    x = np.vstack([x, hub[None, :]]).astype(np.float32)
    first = first_center(x)
    assert first != len(x) - 1
    assert first == int(np.argmin(x @ x.mean(0)))  # the row least aligned with the mean direction
    centers, _ = farthest_first(x, 10)
    assert centers[0] == first and len(x) - 1 not in centers.tolist()
