"""The pieces every import and export shares (`mbml_cli/datasets/batches.py`): a transition stream
to Minari-style episodes and back unchanged (terminal, truncated, a break between rows, an unfinished
tail), the action rescaling and its inverse, task parameters from files."""
from __future__ import annotations

import numpy as np
import pytest

from mbml_cli.datasets.batches import (TaskBatch, attach_tasks, episodes, from_episodes, make_columns,
                                       original_units, rescale)
from mbml_cli.errors import StageError


def stream(rng) -> dict:
    """Four episodes: ends terminal (5 rows), truncated (4), neither but the next row starts
    elsewhere (3), unfinished (2)."""
    lengths, obs, nxt, term, trunc = [5, 4, 3, 2], [], [], [], []
    for k, n in enumerate(lengths):
        path = rng.normal(size=(n + 1, 3)).astype(np.float32)
        obs.append(path[:-1]), nxt.append(path[1:])
        term.append(np.eye(n, dtype=bool)[-1] & (k == 0)), trunc.append(np.eye(n, dtype=bool)[-1] & (k == 1))
    N = sum(lengths)
    return make_columns("stream", np.concatenate(obs), rng.uniform(-1, 1, (N, 2)), rng.normal(size=N),
                        np.concatenate(nxt), np.concatenate(term), np.concatenate(trunc),
                        rng.normal(size=(N, 1)), n_info=1)


def test_stream_to_episodes_and_back_is_unchanged():
    cols = stream(np.random.default_rng(0))
    ranges = episodes(cols)
    assert ranges == [(0, 5), (5, 9), (9, 12), (12, 14)]
    eps = [{"observations": np.concatenate([cols["obs"][s:e], cols["next_obs"][e - 1:e]]),
            "actions": cols["act"][s:e], "rewards": cols["rew"][s:e], "terminations": cols["terminal"][s:e],
            "truncations": cols["truncated"][s:e], "features": cols["info"][s:e]} for s, e in ranges]
    back = from_episodes("stream", eps, 1)
    for k in cols:
        assert back[k].dtype == cols[k].dtype and back[k].tobytes() == cols[k].tobytes(), k
    assert back["terminal"].sum() == 1 and back["truncated"].sum() == 1


def test_episodes_need_one_more_observation_and_features_when_asked():
    cols = stream(np.random.default_rng(1))
    ep = {"observations": cols["obs"][:5], "actions": cols["act"][:5], "rewards": cols["rew"][:5],
          "terminations": cols["terminal"][:5], "truncations": cols["truncated"][:5]}
    with pytest.raises(StageError, match="5 observations for 5 steps"):
        from_episodes("d", [ep], None)
    ep["observations"] = np.concatenate([cols["obs"][:5], cols["next_obs"][4:5]])
    with pytest.raises(StageError, match="needs 2"):
        from_episodes("d", [ep], 2)
    assert from_episodes("d", [ep], None)["info"].shape == (5, 0)


def test_rescale_and_back():
    act = np.array([[0.0, -0.4], [0.4, -0.1]], np.float32)
    assert rescale("d", act, -1, 1) is act                                    # ±1: untouched
    low, high = np.array([-0.4, -0.4]), np.array([0.4, 0.2])
    scaled = rescale("d", act, low, high)
    np.testing.assert_allclose(scaled, [[0.0, -1.0], [1.0, 0.0]], atol=1e-7)
    np.testing.assert_allclose(original_units(scaled, low, high), act, atol=1e-7)
    with pytest.raises(StageError, match="outside the action space"):
        rescale("d", act * 2, low, high)
    with pytest.raises(StageError, match="must be bounded"):
        rescale("d", act, -np.inf, np.inf)


def test_task_parameters_from_files(tmp_path):
    cols = stream(np.random.default_rng(2))
    batches = [TaskBatch(f"ns/task-{i}-v0", cols, -np.ones(2), np.ones(2)) for i in range(2)]
    (tmp_path / "t.csv").write_text("task-1-v0, 3, 4\nns/task-0-v0, 1, 2\n")
    np.testing.assert_array_equal(attach_tasks(batches, tmp_path / "t.csv"), [[1, 2], [3, 4]])
    (tmp_path / "t.yaml").write_text("- [5, 6]\n- [7, 8]\n")
    np.testing.assert_array_equal(attach_tasks(batches, tmp_path / "t.yaml"), [[5, 6], [7, 8]])
    (tmp_path / "short.yaml").write_text("ns/task-0-v0: [1]\nns/task-1-v0: [1, 2]\n")
    with pytest.raises(StageError, match="ns/task-1-v0: 2 task parameters, ns/task-0-v0 has 1"):
        attach_tasks(batches, tmp_path / "short.yaml")
    with pytest.raises(StageError, match="ns/task-0-v0: no task parameters"):
        attach_tasks(batches)
