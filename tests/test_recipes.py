"""Losses, a trained output layer and optimizers: every exact engine must follow a dense
PyTorch float64 reference with the same semantics (torch.optim.SGD, SparseAdam on the hidden
weights, Adam on the output layer) after every step."""

import importlib.util
import math

import numpy as np
import pytest
from conftest import unit_rows

import corrtree as ct
from corrtree.training import batch_schedule
from corrtree.training.losses import CrossEntropy, Logistic, Squared, get_loss
from corrtree.training.optim import (
    SGD,
    Adam,
    Constant,
    Cosine,
    Momentum,
    StepDecay,
    get_optimizer,
    get_schedule,
)

torch = pytest.importorskip("torch")

EXACT = [e for e in ct.ENGINES if e != "faiss" or importlib.util.find_spec("faiss")]


def torch_reference(net, X, Y, *, steps, batch_size, lr, loss, optimizer, train_output, seed=0,
                    schedule=None):  # fmt: skip
    """Dense float64 training in PyTorch with autograd: the weights after every step."""
    W = torch.tensor(net.W, dtype=torch.float64, requires_grad=True)
    A = torch.tensor(net.A, dtype=torch.float64, requires_grad=train_output)
    Xt, Yt = torch.tensor(X), torch.tensor(Y)
    b, scale = net.threshold, net.scale
    kind, hyper = optimizer
    wd = hyper.get("weight_decay", 0.0)
    if kind in ("sgd", "momentum"):
        mom = {k: v for k, v in hyper.items() if k in ("momentum", "nesterov")}
        if kind == "momentum":
            mom.setdefault("momentum", 0.9)
        opt_w = torch.optim.SGD([W], lr=lr, **mom)
        opt_a = torch.optim.SGD([A], lr=lr, **mom) if train_output else None
    else:
        opt_w = torch.optim.SparseAdam([W], lr=lr, betas=hyper.get("betas", (0.9, 0.999)))
        cls = torch.optim.AdamW if wd else torch.optim.Adam
        opt_a = cls([A], lr=lr, weight_decay=wd) if train_output else None
    out = []
    for t, rows in enumerate(batch_schedule(X.shape[0], batch_size, steps, seed)):
        factor = 1.0 if schedule is None else schedule(t, steps)
        for o in (opt_w, opt_a):
            if o is not None:
                for g in o.param_groups:
                    g["lr"] = lr * factor
        idx = slice(None) if rows is None else torch.tensor(rows)
        Xb, Yb = Xt[idx], Yt[idx]
        Z = Xb @ W.T
        F = scale * torch.relu(Z - b) @ A
        if loss == "squared":
            value = 0.5 * ((F - Yb) ** 2).sum()
        elif loss == "cross_entropy":
            value = -(Yb * torch.log_softmax(F, dim=1)).sum()
        else:
            value = (torch.nn.functional.softplus(F) - Yb * F).sum()
        W.grad = A.grad = None
        value.backward()
        fired = torch.nonzero((Z > b).any(dim=0)).ravel()
        with torch.no_grad():
            if wd:  # decoupled weight decay on every row of W (AdamW's, and SGD's here)
                W.mul_(1 - lr * factor * wd)
                if kind != "adam" and train_output:
                    A.mul_(1 - lr * factor * wd)
        if kind == "adam":  # the lazy update: only the rows with a firing pair have a gradient
            W.grad = torch.sparse_coo_tensor(
                fired[None], W.grad[fired], W.shape, check_invariants=False
            )
        opt_w.step()
        if opt_a is not None:
            opt_a.step()
        out.append((W.detach().numpy().copy(), A.detach().numpy().copy(), float(value.detach())))
    return out


def targets(loss, rng, n, C):
    if loss == "cross_entropy":
        labels = rng.integers(0, C, n)
        return labels, np.eye(C)[labels]
    if loss == "logistic":
        labels = rng.integers(0, 2, n).astype(float)
        return labels, labels[:, None]
    Y = rng.standard_normal((n, C))
    return Y, Y


RECIPES = [
    ("squared", ("sgd", {}), False, 1),
    ("squared", ("adam", {}), True, 2),
    ("cross_entropy", ("sgd", {}), True, 3),
    ("cross_entropy", ("adam", {}), True, 3),
    ("cross_entropy", ("adam", {"weight_decay": 0.1}), True, 3),
    ("logistic", ("adam", {}), False, 1),
    ("logistic", ("sgd", {"weight_decay": 0.05}), True, 1),
    ("squared", ("momentum", {}), False, 1),
    ("cross_entropy", ("momentum", {"nesterov": True, "momentum": 0.8}), True, 3),
    ("squared", ("momentum", {"weight_decay": 0.1}), True, 2),
]


def corrtree_optimizer(kind, hyper):
    return {"sgd": SGD, "adam": Adam, "momentum": Momentum}[kind](**hyper)


@pytest.mark.parametrize("engine", EXACT)
@pytest.mark.parametrize("batch_size", [None, 16])
@pytest.mark.parametrize("loss,optimizer,train_output,C", RECIPES)
def test_recipes_match_torch_every_step(engine, batch_size, loss, optimizer, train_output, C,
                                        rng):  # fmt: skip
    n, d, m = 48, 6, 300
    X = unit_rows(rng, n, d)
    y, Y = targets(loss, rng, n, C)
    lr = 0.3 if optimizer[0] == "sgd" else 0.02
    net = ct.ShiftedReLUNet(d, m, n_outputs=C, seed=5, threshold=0.8)
    ref = torch_reference(
        net, X, Y, steps=8, batch_size=batch_size, lr=lr, loss=loss, optimizer=optimizer,
        train_output=train_output,
    )  # fmt: skip
    seen = []
    hist = ct.train(
        net, X, y, steps=8, lr=lr, loss=loss, optimizer=corrtree_optimizer(*optimizer),
        train_output=train_output, engine=engine, batch_size=batch_size,
        callback=lambda t, net, info: seen.append((net.W.copy(), net.A.copy())),
    )  # fmt: skip
    for t, ((W, A), (W_ref, A_ref, value)) in enumerate(zip(seen, ref, strict=True)):
        assert np.linalg.norm(W - W_ref) <= 1e-12 * np.linalg.norm(W_ref), f"W at step {t}"
        assert np.linalg.norm(A - A_ref) <= 1e-12 * np.linalg.norm(A_ref), f"A at step {t}"
        assert math.isclose(hist.loss[t], value, rel_tol=1e-12), f"loss at step {t}"
    moved_a = not np.array_equal(seen[-1][1], np.sign(seen[-1][1]))
    assert moved_a == train_output


@pytest.mark.parametrize("batch_size", [None, 16])
def test_certified_adam_exact_through_hot_blocks_and_rereferences(batch_size, rng):
    """Adam moves rows far: with a small slack, neurons turn hot, the hot block runs on BLAS
    and neurons are re-referenced, and the trajectory is still the reference's."""
    n, d, m, C = 64, 6, 400, 3
    X = unit_rows(rng, n, d)
    labels, Y = targets("cross_entropy", rng, n, C)
    net = ct.ShiftedReLUNet(d, m, n_outputs=C, seed=2, threshold=0.7)
    ref = torch_reference(
        net, X, Y, steps=25, batch_size=batch_size, lr=0.05, loss="cross_entropy",
        optimizer=("adam", {}), train_output=True,
    )  # fmt: skip
    hist = ct.train(
        net, X, labels, steps=25, lr=0.05, loss="cross_entropy", optimizer="adam",
        train_output=True, engine="certified", batch_size=batch_size,
        engine_options={"slack": 0.05, "blas_gradient": 0.0, "dense_fraction": 0.5},
    )  # fmt: skip
    W_ref, A_ref, _ = ref[-1]
    assert np.linalg.norm(net.W - W_ref) <= 1e-12 * np.linalg.norm(W_ref)
    assert np.linalg.norm(net.A - A_ref) <= 1e-12 * np.linalg.norm(A_ref)
    assert hist.stats["rereferenced"] + hist.stats["rebuilds"] > 1
    assert hist.stats["hot_checks"] > 0


def test_schedule_matches_torch(rng):
    n, d, m = 40, 5, 200
    X = unit_rows(rng, n, d)
    labels, Y = targets("cross_entropy", rng, n, 3)
    net = ct.ShiftedReLUNet(d, m, n_outputs=3, seed=1, threshold=0.8)
    sched = Cosine(warmup=3)
    ref = torch_reference(
        net, X, Y, steps=10, batch_size=8, lr=0.02, loss="cross_entropy",
        optimizer=("adam", {}), train_output=True, schedule=sched,
    )  # fmt: skip
    ct.train(
        net, X, labels, steps=10, lr=0.02, loss="cross_entropy", optimizer="adam",
        train_output=True, engine="certified", batch_size=8, schedule=sched,
    )  # fmt: skip
    np.testing.assert_allclose(net.W, ref[-1][0], rtol=1e-11, atol=1e-13)


# --- losses ----------------------------------------------------------------------------------
@pytest.mark.parametrize("loss", ["squared", "cross_entropy", "logistic"])
def test_loss_value_and_gradient_match_autograd(loss, rng):
    C = 1 if loss == "logistic" else 4
    F = rng.standard_normal((7, C)) * 5
    y, Y = targets(loss, rng, 7, C)
    Y = get_loss(loss).targets(y, 7, C, np.float64)
    value, dF = get_loss(loss)(F, Y)
    Ft = torch.tensor(F, requires_grad=True)
    Yt = torch.tensor(Y)
    if loss == "squared":
        ref = 0.5 * ((Ft - Yt) ** 2).sum()
    elif loss == "cross_entropy":
        ref = torch.nn.functional.cross_entropy(Ft, torch.tensor(y), reduction="sum")
    else:
        ref = torch.nn.functional.binary_cross_entropy_with_logits(Ft, Yt, reduction="sum")
    ref.backward()
    assert math.isclose(value, float(ref.detach()), rel_tol=1e-13)
    np.testing.assert_allclose(dF, Ft.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_cross_entropy_is_stable_for_large_outputs():
    F = np.array([[1000.0, 0.0, -1000.0]])
    value, dF = CrossEntropy()(F, np.array([[0.0, 1.0, 0.0]]))
    assert value == pytest.approx(1000.0)
    np.testing.assert_allclose(dF, [[1.0, -1.0, 0.0]], atol=1e-300)


def test_loss_targets_errors():
    with pytest.raises(ValueError, match="at least 2 outputs"):
        CrossEntropy().targets([0, 1], 2, 1, np.float64)
    with pytest.raises(IndexError, match="class label 3 is out of range"):
        CrossEntropy().targets([0, 3], 2, 3, np.float64)
    with pytest.raises(ValueError, match="integers"):
        CrossEntropy().targets([0.5, 1], 2, 3, np.float64)
    with pytest.raises(ValueError, match="1 output"):
        Logistic().targets([0, 1], 2, 2, np.float64)
    with pytest.raises(ValueError, match="0/1"):
        Logistic().targets([0, 2], 2, 1, np.float64)
    np.testing.assert_array_equal(Logistic().targets([-1, 1], 2, 1, np.float64), [[0], [1]])
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        get_loss("hinge")
    assert isinstance(get_loss(Squared()), Squared)


def test_accuracy_by_loss():
    F = np.array([[0.2, 0.9], [0.8, 0.1]])
    assert CrossEntropy().accuracy(F, np.array([[0, 1], [0, 1]])) == 0.5
    assert Squared().accuracy(F[:, :1], F[:, :1]) is None
    assert Logistic().accuracy(np.array([[1.0], [-1.0]]), np.array([[1.0], [1.0]])) == 0.5


# --- optimizers and schedules ----------------------------------------------------------------
def test_optimizer_errors_and_names():
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        get_optimizer("rmsprop")
    with pytest.raises(ValueError, match="betas"):
        Adam(betas=(1.0, 0.9))
    with pytest.raises(ValueError, match="weight_decay"):
        SGD(weight_decay=-1)
    with pytest.raises(ValueError, match="momentum must be in"):
        Momentum(momentum=1.0)
    with pytest.raises(ValueError, match="Nesterov"):
        Momentum(momentum=0, nesterov=True)
    assert get_optimizer("adam").betas == (0.9, 0.999)
    assert SGD().fused and not SGD(weight_decay=0.1).fused
    with pytest.raises(RuntimeError, match="begin_step"):
        Adam().update("W", np.zeros((2, 2)), np.array([0]), np.ones((1, 2)), 0.1, lazy=True)


def test_adam_state_round_trip():
    a = Adam()
    a.begin_step()
    P = np.zeros((3, 2))
    a.update("W0", P, np.array([1]), np.ones((1, 2)), 0.1, lazy=True)
    b = Adam()
    b.load_state_dict(a.state_dict())
    assert b.steps == 1
    np.testing.assert_array_equal(b.state["W0"]["m"], a.state["W0"]["m"])


def test_schedules():
    assert Constant()(5, 10) == 1.0
    assert [StepDecay(2, 0.5)(t, 10) for t in range(5)] == [1, 1, 0.5, 0.5, 0.25]
    c = Cosine(warmup=0.2)
    assert c(0, 10) == pytest.approx(1 / 3)
    assert c(2, 10) == pytest.approx(1.0)
    assert c(9, 10) == pytest.approx(0.0, abs=1e-12)
    assert all(c(t, 10) >= c(t + 1, 10) for t in range(2, 9))
    assert isinstance(get_schedule(None), Constant)
    with pytest.raises(ValueError, match="unknown schedule"):
        get_schedule("linear")


# --- training with a held-out set --------------------------------------------------------------
def _digits():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return ct.normalize_rows(X), y


def test_eval_records_scores_and_stops_at_target():
    X, y = _digits()
    net = ct.ShiftedReLUNet(64, 2048, n_outputs=10)
    hist = ct.train(
        net, X[:1200], y[:1200], epochs=20, batch_size=128, loss="cross_entropy",
        optimizer="adam", train_output=True, lr=1e-2, eval=(X[1200:], y[1200:]),
        eval_every=5, target_accuracy=0.9,
    )  # fmt: skip
    assert hist.stopped == "target"
    assert hist.eval_accuracy[-1] >= 0.9
    assert hist.eval_step[-1] == hist.steps < 20 * 10
    F = net.outputs(net.check_X(X[1200:]))
    assert hist.eval_accuracy[-1] == np.mean(F.argmax(1) == y[1200:])
    assert all(a < b for a, b in zip(hist.train_seconds, hist.train_seconds[1:], strict=False))
    assert all(s % 5 == 0 or s % 10 == 0 for s in hist.eval_step)
    assert "accuracy" in repr(hist) and len(repr(hist)) < 300


def test_patience_restores_the_best_weights():
    X, y = _digits()
    net = ct.ShiftedReLUNet(64, 1024, n_outputs=10)
    best = {}

    def keep(t, net, info):
        best[t + 1] = net.W.copy()

    hist = ct.train(
        net, X[:600], y[:600], epochs=40, batch_size=100, loss="cross_entropy",
        optimizer="adam", train_output=True, lr=0.2, eval=(X[600:], y[600:]), patience=2,
        callback=keep,
    )  # fmt: skip
    assert hist.stopped == "patience"
    assert hist.best_step == hist.eval_step[int(np.argmin(hist.eval_loss))]
    np.testing.assert_array_equal(net.W, best[hist.best_step])


def test_recipe_argument_errors(rng):
    X = unit_rows(rng, 10, 3)
    net = ct.ShiftedReLUNet(3, 50, n_outputs=2)
    with pytest.raises(ValueError, match="need a held-out set"):
        ct.train(net, X, np.zeros(10, int), steps=1, loss="cross_entropy", patience=2)
    with pytest.raises(TypeError, match="eval must be a pair"):
        ct.train(net, X, np.zeros(10, int), steps=1, loss="cross_entropy", eval=X)
    with pytest.raises(ValueError, match="target_accuracy"):
        ct.train(net, X, np.zeros(10, int), steps=1, loss="cross_entropy", eval=(X, [0] * 10),
                 target_accuracy=2)  # fmt: skip
    with pytest.raises(ValueError, match="not for sharded runs"):
        ct.train(net, X, np.zeros(10, int), steps=1, loss="cross_entropy", eval=(X, [0] * 10),
                 patience=2, workers=2)  # fmt: skip
    with pytest.raises(TypeError, match="train_output"):
        ct.train(net, X, np.zeros((10, 2)), steps=1, train_output="yes")


def test_auto_plans_a_lazy_index_for_short_runs_and_adam(rng):
    from corrtree.engines.certified import CertifiedEngine
    from corrtree.training.step import _planned

    plan = lambda opts, paper, epochs: _planned(CertifiedEngine, "auto", opts, paper, epochs)  # noqa: E731
    assert plan(None, True, 5.0) == {"lazy": False}
    assert plan(None, True, 0.5) == {"lazy": True}
    assert plan(None, False, 5.0) == {"lazy": True, "rebuild_after": 8.0}
    assert plan({"lazy": False}, False, 5.0) == {"lazy": False, "rebuild_after": 8.0}
    assert _planned(CertifiedEngine, "certified", None, False, 5.0) is None
    # through train: an Adam run on certified builds no index up front
    X = unit_rows(rng, 2000, 8)
    net = ct.ShiftedReLUNet(8, 1024, n_outputs=3)
    hist = ct.train(net, X, rng.integers(0, 3, 2000), steps=2, batch_size=100,
                    loss="cross_entropy", optimizer="adam", train_output=True)  # fmt: skip
    assert hist.engine == "certified"
    assert hist.stats["rebuilds"] == 0 and hist.stats["inner_products"] == 2 * 100 * 1024


def test_deep_and_sharded_networks_refuse_other_recipes(rng):
    from corrtree.nets import ShiftedReLUMLP

    X = unit_rows(rng, 20, 4)
    mlp = ShiftedReLUMLP(4, (32, 16), n_outputs=2)
    with pytest.raises(ValueError, match="deep network trains with plain SGD"):
        ct.train(mlp, X, np.zeros(20, int), steps=1, loss="cross_entropy", optimizer="adam")
    # the losses reach deep networks: cross-entropy's gradient starts the backward pass
    hist = ct.train(mlp, X, rng.integers(0, 2, 20), steps=3, lr=0.5, loss="cross_entropy")
    assert all(np.isfinite(hist.loss))


def test_dense_engine_checks_memory(rng, monkeypatch):
    X = unit_rows(rng, 50, 4)
    net = ct.ShiftedReLUNet(4, 100)
    with pytest.raises(MemoryError, match="dense engine's buffers"):
        ct.train(net, X, np.zeros(50), steps=1, engine="dense", max_memory=10)
    monkeypatch.setenv("CORRTREE_MAX_MEMORY", "garbage")
    with pytest.raises(ValueError, match="CORRTREE_MAX_MEMORY must be a finite number"):
        ct.train(net, X, np.zeros(50), steps=1, engine="dense")


@pytest.mark.parametrize("value", ["inf", "-1", "nan", "garbage"])
def test_bad_memory_limit_is_named(value, rng, monkeypatch):
    monkeypatch.setenv("CORRTREE_MAX_MEMORY", value)
    net = ct.ShiftedReLUNet(4, 100)
    with pytest.raises(ValueError, match="CORRTREE_MAX_MEMORY must be a finite number"):
        ct.train(net, unit_rows(rng, 20, 4), np.zeros(20), steps=1, engine="dense")


@pytest.mark.parametrize("workers", [0, -1])
def test_workers_must_be_positive_before_anything_starts(workers, rng):
    net = ct.ShiftedReLUNet(4, 100)
    with pytest.raises(ValueError, match=f"workers must be >= 1, got {workers}"):
        ct.train(net, unit_rows(rng, 20, 4), np.zeros(20), steps=1, workers=workers)
