"""`run/loop.py` on a toy job: the log rows, the checkpoint cadence, divergence, and a loop killed
from a hook and resumed ending with the same state and table rows as one never interrupted."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mbml_cli.core.store import Store
from mbml_cli.errors import StageError
from mbml_cli.run import loop
from mbml_cli.run.loop import Job, Schedule, run_loop

TOTAL = 10
SCHEDULE = Schedule(TOTAL, log_every=2, checkpoint_every=3, eval_every=4)


class Toy:
    """A Trainer: w pulled towards a standard normal draw by SGD with momentum (state to checkpoint)."""

    def __init__(self, w0: float = 0.0):
        self.w = torch.nn.Linear(1, 1, bias=False)
        torch.nn.init.constant_(self.w.weight, w0)
        self.opt = torch.optim.SGD(self.w.parameters(), lr=0.1, momentum=0.9)

    def modules(self):
        return {"w": self.w}

    def optimisers(self):
        return {"sgd": self.opt}

    def step(self, gen):
        x = torch.randn((), generator=gen)
        loss = (self.w.weight.squeeze() - x) ** 2
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {"loss": loss.detach(), "x": x}


class ToyJob(Job):
    title, stage, checkpoint = "toy", "toy", "models/toy/checkpoint/all"
    tables = ["metrics/toy/train", "metrics/toy/eval"]
    expected = {"hash": "h"}

    def __init__(self, store, w0=0.0, die_at=None):
        self.store, self.trainer, self.die_at = store, Toy(w0), die_at
        self.gen = torch.Generator().manual_seed(7)
        self.evals, self.finished = 0, None

    def state(self):
        return self.trainer.modules(), self.trainer.optimisers(), {"rng": self.gen}

    def restore(self, tensors, meta):
        self.evals = meta["evals"]

    def extras(self):
        return {}, {"evals": self.evals}

    def step(self, t):
        if t == self.die_at:
            raise KeyboardInterrupt
        return [self.trainer.step(self.gen)]

    def evaluate(self, t, report):
        self.evals += 1
        self.store.log_row(self.tables[1], {"step": t, "w": float(self.trainer.w.weight.detach()), "evals": self.evals})
        return float(self.trainer.w.weight.detach())

    def log(self, t, means, result, rate):
        return {self.tables[0]: {"step": t, **{k: float(v) for k, v in means.items()}}}, None

    def finish(self, t, report):
        self.finished = t


def new_store(path):
    return Store.create(path, {})


def context(store):
    return SimpleNamespace(store=store, resume=True, progress=lambda f: None)


def weights(job):
    return {k: v.clone() for k, v in job.trainer.w.state_dict().items()}


def test_rows_are_means_of_the_steps_since_the_last_row(tmp_path):
    store = new_store(tmp_path / "a.zarr")
    job = ToyJob(store)
    run_loop(context(store), job, SCHEDULE)
    ref, gen = Toy(), torch.Generator().manual_seed(7)
    losses = [ref.step(gen) for _ in range(TOTAL)]
    train = store.read_rows("metrics/toy/train")
    assert train["step"].tolist() == [2, 4, 6, 8, 10]
    for name in ("loss", "x"):
        want = [(float(losses[i][name].double()) + float(losses[i + 1][name].double())) / 2 for i in range(0, TOTAL, 2)]
        assert train[name].tolist() == want, name
    assert store.read_rows("metrics/toy/eval")["step"].tolist() == [4, 8, 10]     # and after the last step
    assert job.finished == TOTAL
    assert torch.equal(job.trainer.w.weight, ref.w.weight)
    assert not store.has_weights(ToyJob.checkpoint)                  # deleted once done


def test_checkpoint_cadence(tmp_path, monkeypatch):
    store = new_store(tmp_path / "a.zarr")
    saved, save = [], Store.save_weights

    def spy(self, path, tensors, meta=None):
        saved.append((path, meta["step"], meta["rows"]))
        return save(self, path, tensors, meta)

    monkeypatch.setattr(Store, "save_weights", spy)
    run_loop(context(store), ToyJob(store), SCHEDULE)
    assert [s[1] for s in saved] == [3, 6, 9]                         # none after the last step
    assert saved[1][2] == {"metrics/toy/train": 3, "metrics/toy/eval": 1}   # rows written before saving
    saved.clear()
    keep = Schedule(TOTAL, log_every=2, checkpoint_every=3, eval_every=4, checkpoint_at=(4,), keep_checkpoint=True)
    run_loop(context(store), ToyJob(store), keep)
    assert [s[1] for s in saved] == [3, 4, 6, 9, 10]
    assert store.has_weights(ToyJob.checkpoint)


def test_killed_and_resumed_loop_equals_an_uninterrupted_one(tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "WRITE_EVERY", 0.0)          # rows written at once: the resume must roll them back
    plain = new_store(tmp_path / "plain.zarr")
    ref = ToyJob(plain)
    run_loop(context(plain), ref, SCHEDULE)

    store = new_store(tmp_path / "killed.zarr")
    with pytest.raises(KeyboardInterrupt):
        run_loop(context(store), ToyJob(store, die_at=8), SCHEDULE)     # checkpoint at 6, rows of 8 written
    assert store.rows("metrics/toy/train") == 4 and store.rows("metrics/toy/eval") == 2
    resumed = ToyJob(store, w0=5.0)                                       # other weights: the checkpoint's win
    run_loop(context(store), resumed, SCHEDULE)
    assert resumed.evals == ref.evals == 3
    for name, value in weights(ref).items():
        assert torch.equal(weights(resumed)[name], value), name
    assert torch.equal(resumed.gen.get_state(), ref.gen.get_state())
    assert str(resumed.trainer.opt.state_dict()) == str(ref.trainer.opt.state_dict())
    for table in ToyJob.tables:
        a, b = plain.read_rows(table), store.read_rows(table)
        assert a.keys() == b.keys() and len(a["step"]) > 1
        for col in a:
            np.testing.assert_array_equal(a[col], b[col], err_msg=f"{table} {col}")


def test_a_checkpoint_of_other_inputs_is_not_resumed(tmp_path):
    store = new_store(tmp_path / "a.zarr")
    with pytest.raises(KeyboardInterrupt):
        run_loop(context(store), ToyJob(store, die_at=8), SCHEDULE)
    other = ToyJob(store)
    other.expected = {"hash": "changed"}
    run_loop(context(store), other, SCHEDULE)
    assert store.read_rows("metrics/toy/train")["step"].tolist() == [2, 4, 6, 8, 10]
    assert other.evals == 3


def test_a_non_finite_loss_stops_the_loop_before_its_row(tmp_path):
    store = new_store(tmp_path / "a.zarr")
    job = ToyJob(store)
    real = job.trainer.step
    job.trainer.step = lambda gen: {**real(gen), "loss": torch.tensor(float("nan"))}
    with pytest.raises(StageError, match="toy diverged at step 2: loss = nan"):
        run_loop(context(store), job, SCHEDULE)
    assert store.rows("metrics/toy/train") == 0
