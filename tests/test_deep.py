"""Deep shifted-ReLU networks: the sparse engine equals the dense float64 reference after
every step, and the reference equals PyTorch autograd."""

import numpy as np
import pytest
from conftest import unit_rows

import corrtree as ct
from corrtree.engines.base import SparseEngine
from corrtree.nets import ShiftedReLUMLP, layer_scale, reference_step
from corrtree.training import batch_schedule
from corrtree.training.deep import DeepEngine


def _data(rng, n=150, d=12, C=3):
    return unit_rows(rng, n, d), rng.standard_normal((n, C))


def _copy(net):
    return ShiftedReLUMLP.from_state({k: np.copy(v) for k, v in net.state_dict().items()})


def _check_every_step(net, X, Y, steps=5, lr=0.05, batch=None, engine="auto", options=None):
    ref = _copy(net)
    losses = []
    ref_losses = []
    schedule = list(batch_schedule(X.shape[0], batch, steps, 0))

    def check(t, net, info):
        losses.append(info.loss)
        ref_losses.append(reference_step(ref, X, Y, lr, schedule[t]))
        for l in range(1, net.depth + 1):
            np.testing.assert_allclose(
                net.weights(l), ref.weights(l), rtol=1e-9, atol=1e-12, err_msg=f"layer {l}"
            )

    hist = ct.train(
        net,
        X,
        Y,
        steps=steps,
        lr=lr,
        batch_size=batch,
        engine=engine,
        engine_options=options,
        callback=check,
    )
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-9)
    return hist


@pytest.mark.parametrize("widths", [(40,), (40, 30), (40, 30, 24)])
@pytest.mark.parametrize("batch", [None, 32])
def test_sparse_engine_equals_dense_reference(rng, widths, batch):
    X, Y = _data(rng)
    net = ShiftedReLUMLP(12, widths, n_outputs=3, seed=2)
    hist = _check_every_step(net, X, Y, batch=batch)
    assert hist.loss[-1] < hist.loss[0] or batch is not None
    assert hist.engine == "deep[dense]"


class _BruteForce(SparseEngine):
    """An engine as a user would write one: only ``find``, through the protocol's defaults
    (``SparseEngine.neuron_pairs``, ``Engine.descend``) for layer 1."""

    name = "brute"

    def find(self, rows):
        Z = self.X[rows] @ self.net.W.T
        mask = Z > self.b
        ptr = np.concatenate([[0], np.cumsum(mask.sum(axis=1))]).astype(np.int64)
        return ptr, np.nonzero(mask)[1].astype(np.int64), Z[mask]


@pytest.mark.parametrize("engine", ["dtree", "wtree", "halfspace", "faiss", _BruteForce])
@pytest.mark.parametrize("batch", [None, 16])
def test_every_exact_engine_finds_layer_one(rng, engine, batch):
    if engine == "faiss":
        pytest.importorskip("faiss")
    X, Y = _data(rng)
    net = ShiftedReLUMLP(12, (40, 30), n_outputs=3, seed=5)
    _check_every_step(net, X, Y, engine=engine, batch=batch)


@pytest.mark.parametrize("widths", [(40,), (40, 30), (40, 30, 24)])
@pytest.mark.parametrize("batch", [None, 16])
@pytest.mark.parametrize("blas", [None, 0.0])
def test_certified_finds_and_updates_layer_one(rng, widths, batch, blas):
    """certified as layer 1's engine writes W_1 from the coefficients back-propagated from
    above, with its drift certificates in the same pass; a small slack makes neurons turn hot
    and get re-referenced, and every layer still equals the dense reference after every
    step. ``blas_gradient=0`` puts the hot neurons in one BLAS block at every step (their
    pairs then come from the block's correlations, their update from its coefficient
    matrix)."""
    X, Y = _data(rng)
    net = ShiftedReLUMLP(12, widths, n_outputs=3, seed=4)
    options = {"slack": 0.05, "rebuild_after": 0.05, "lazy": batch is not None}
    if blas is not None:
        options["blas_gradient"] = blas
    hist = _check_every_step(
        net,
        X,
        Y,
        steps=12 if batch is None else 60,
        lr=0.1,
        batch=batch,
        engine="certified",
        options=options,
    )
    assert hist.engine == "deep[certified]" or (len(widths) == 1 and hist.engine == "certified")
    assert hist.stats["hot_checks"] > 0 and hist.stats["rereferenced"] + hist.stats["rebuilds"] > 1


def test_nothing_and_everything_firing(rng):
    X, Y = _data(rng)
    net = ShiftedReLUMLP(12, (40, 30, 20), n_outputs=3, thresholds=(0.5, 50.0, 0.5), seed=1)
    hist = _check_every_step(net, X, Y, steps=3)  # layer 2 never fires: nothing moves above
    assert all(p > 0 for p in hist.fired_pairs)
    np.testing.assert_allclose(net.predict(X), 0.0)
    # all-positive weights from layer 2 on, threshold 0: every unit fires there
    base = ShiftedReLUMLP(12, (40, 30, 20), n_outputs=3, seed=3)
    Ws = [base.weights(1)] + [np.abs(base.weights(l)) for l in (2, 3)]
    net = ShiftedReLUMLP.from_weights(Ws, base.A, thresholds=(0.0, 0.0, 0.0))
    assert all(np.mean(h > 0) > 0.999 for h in net.activations(X)[1:])
    _check_every_step(net, X, Y, steps=3, lr=1e-4)


def test_one_layer_is_shifted_relu_net(rng):
    X, Y = _data(rng)
    mlp = ShiftedReLUMLP(12, (50,), n_outputs=3, seed=9)
    net = ct.ShiftedReLUNet(12, 50, seed=9, n_outputs=3)
    np.testing.assert_array_equal(mlp.W1, net.W)
    np.testing.assert_array_equal(mlp.A, net.A)
    assert mlp.thresholds == (net.threshold,) and mlp.scale == net.scale
    ct.train(mlp, X, Y, steps=4, lr=0.05, batch_size=50)
    ct.train(net, X, Y, steps=4, lr=0.05, batch_size=50, engine="dense")
    np.testing.assert_allclose(mlp.W1, net.W, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(mlp.predict(X), net.predict(X), rtol=1e-12, atol=1e-14)


def test_float32_close_to_reference(rng):
    X, Y = _data(rng)
    net = ShiftedReLUMLP(12, (64, 48), n_outputs=3, seed=4, dtype=np.float32)
    ref = ShiftedReLUMLP(12, (64, 48), n_outputs=3, seed=4, dtype=np.float64)
    hist = ct.train(net, X.astype(np.float32), Y, steps=3, lr=0.05)
    ref_losses = [reference_step(ref, X, Y, 0.05) for _ in range(3)]
    np.testing.assert_allclose(hist.loss, ref_losses, rtol=1e-4)


def test_initialisation_gives_unit_variance_and_the_papers_rate():
    from corrtree.datasets import load_dataset

    X = load_dataset("digits").X  # unit norm
    net = ShiftedReLUMLP(X.shape[1], (4096, 2048, 1024), seed=0)
    h = X
    for l in range(1, 4):
        z = h @ net.weights(l).T
        assert np.var(z) == pytest.approx(1.0, rel=0.1), l
        b = net.thresholds[l - 1]
        assert np.mean(z > b) == pytest.approx(ct.firing_probability(b), rel=0.15), l
        h = np.maximum(z - b, 0)
    assert layer_scale(4096, net.thresholds[0]) == pytest.approx(np.std(net.weights(2)), rel=0.01)


def test_reference_equals_pytorch_autograd(rng):
    torch = pytest.importorskip("torch")
    X, Y = _data(rng, n=60)
    for widths in [(30,), (30, 20), (30, 20, 16)]:
        net = ShiftedReLUMLP(12, widths, n_outputs=3, seed=1, thresholds=0.3)
        Ws = [torch.tensor(net.weights(l), requires_grad=True) for l in range(1, len(widths) + 1)]
        A = torch.tensor(net.A)
        rows = np.arange(10, 50)
        for _ in range(3):
            h = torch.tensor(X[rows])
            for l, W in enumerate(Ws):
                h = torch.clamp(h @ W.T - net.thresholds[l], min=0)
            loss = 0.5 * ((net.scale * h @ A - torch.tensor(Y[rows])) ** 2).sum()
            loss.backward()
            with torch.no_grad():
                for W in Ws:
                    W -= 0.1 * W.grad
                    W.grad = None
            ours = reference_step(net, X, Y, 0.1, rows)
            assert ours == pytest.approx(loss.item(), rel=1e-12)
        for l, W in enumerate(Ws, start=1):
            np.testing.assert_allclose(net.weights(l), W.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_state_roundtrip_and_errors(rng, tmp_path):
    X, _ = _data(rng)
    net = ShiftedReLUMLP(12, (20, 10), n_outputs=2, seed=0)
    again = ShiftedReLUMLP.from_state(net.state_dict())
    np.testing.assert_array_equal(again.predict(X), net.predict(X))
    with pytest.raises(ValueError, match="at least one hidden layer"):
        ShiftedReLUMLP(12, ())
    with pytest.raises(ValueError, match="2 thresholds for 3 layers"):
        ShiftedReLUMLP(12, (4, 4, 4), thresholds=(1.0, 1.0))
    with pytest.raises(ValueError, match="W_2 has 7 columns but layer 1 has 20"):
        ShiftedReLUMLP.from_weights([np.ones((20, 12)), np.ones((5, 7))], np.ones(5))
    with pytest.raises(ValueError, match="cannot find a deep network's first-layer pairs"):
        DeepEngine(net, X, "lsh")
    with pytest.raises(ValueError, match="features"):
        net.predict(np.ones((3, 5)))


def test_command_line_and_estimator(tmp_path, capsys):
    from corrtree.app.cli import main as cli
    from corrtree.app.run import load_model

    out = str(tmp_path / "deep")
    args = ["train", "--widths", "256,128", "--steps", "4", "--batch-size", "200", "--out", out]
    assert cli([*args, "--quiet"]) == 0
    net = load_model(out)
    assert isinstance(net, ShiftedReLUMLP) and net.widths == (256, 128)
    assert cli(["info", out]) == 0 and cli(["predict", out]) == 0
    assert "accuracy=" in capsys.readouterr().out
    assert cli(["train", "--resume", out, "--steps", "6", "--quiet"]) == 0
    six = str(tmp_path / "six")
    assert cli([*args[:4], "6", *args[5:-1], six, "--quiet"]) == 0
    np.testing.assert_allclose(load_model(out).weights(2), load_model(six).weights(2), rtol=1e-12)
    with pytest.raises(SystemExit):
        cli(["train", "--widths", "4,x", "--out", str(tmp_path / "bad")])
    assert "expected comma-separated positive integers" in capsys.readouterr().err

    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    clf = ct.SparseReLUClassifier(widths=(512, 256), steps=60, batch_size=256).fit(X, y)
    assert isinstance(clf.net_, ShiftedReLUMLP) and clf.score(X, y) > 0.9
