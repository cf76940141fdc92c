"""scikit-learn's own estimator checks, and the estimators against the engines."""

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.utils.estimator_checks import parametrize_with_checks

import corrtree as ct
from corrtree.sklearn import SparseReLUClassifier, SparseReLURegressor

SMALL = dict(width=64, steps=40)


@parametrize_with_checks(
    [
        SparseReLURegressor(**SMALL),
        SparseReLUClassifier(**SMALL),
        SparseReLUClassifier(**SMALL, recipe="paper"),
    ]
)
def test_sklearn_checks(estimator, check):
    check(estimator)


@pytest.mark.parametrize("engine", ["dense", "dtree", "wtree"])
def test_classifier_engines_agree(engine):
    X, y = load_digits(return_X_y=True)
    X, y = X[:300], y[:300]
    kw = dict(width=1024, steps=8, learning_rate=0.25, recipe="paper")
    ref = SparseReLUClassifier(**kw, engine="dense").fit(X, y)
    clf = SparseReLUClassifier(**kw, engine=engine).fit(X, y)
    np.testing.assert_allclose(clf.net_.W, ref.net_.W, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(clf.predict(X), ref.predict(X))
    assert clf.score(X, y) > 0.7  # 10 classes: chance is 0.1


def test_regressor_matches_train():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 4))
    y = rng.standard_normal(50)
    reg = SparseReLURegressor(width=200, steps=3, learning_rate=0.1, recipe="paper").fit(X, y)
    net = ct.ShiftedReLUNet(4, 200, seed=0)
    Xn = ct.normalize_rows(X)
    ct.train(net, Xn, y, steps=3, lr=0.1, engine="dtree")
    np.testing.assert_allclose(reg.predict(X), net.predict(Xn), rtol=1e-9)
    assert reg.get_params()["engine"] == "auto"
    reg.set_params(engine="wtree")
    assert reg.engine == "wtree"


def test_classifier_adam_recipe_matches_train_and_gives_probabilities():
    X, y = load_digits(return_X_y=True)
    X, y = X[:400], y[:400]
    clf = SparseReLUClassifier(width=1024, steps=30, batch_size=100).fit(X, y)
    net = ct.ShiftedReLUNet(64, 1024, n_outputs=10, seed=0)
    ct.train(net, ct.normalize_rows(X), y, steps=30, batch_size=100, lr=1e-2,
             loss="cross_entropy", optimizer="adam", train_output=True)  # fmt: skip
    np.testing.assert_allclose(clf.net_.A, net.A, rtol=1e-9, atol=1e-12)
    P = clf.predict_proba(X)
    np.testing.assert_allclose(P.sum(axis=1), 1.0)
    np.testing.assert_array_equal(clf.classes_[P.argmax(axis=1)], clf.predict(X))
    assert clf.score(X, y) > 0.9
    with pytest.raises(ValueError, match="recipe must be"):
        SparseReLUClassifier(recipe="sgd").fit(X, y)


def test_mlp_style_parameters_and_early_stopping(capsys):
    X, y = load_digits(return_X_y=True)
    X, y = X[:400], y[:400]
    clf = SparseReLUClassifier(width=512, epochs=2, batch_size=100).fit(X, y)
    assert clf.n_iter_ == 8 and len(clf.loss_curve_) == 8  # 2 epochs of 4 batches
    assert clf.loss_curve_ == clf.history_.loss
    stop = SparseReLUClassifier(width=512, epochs=20, batch_size=80, learning_rate=0.05,
                                early_stopping=True, validation_fraction=0.2,
                                n_iter_no_change=2, verbose=True).fit(X, y)  # fmt: skip
    h = stop.history_
    assert stop.n_iter_ == h.steps < 80 and h.stopped == "patience"  # 320 points: 4 per epoch
    assert len(stop.validation_scores_) == len(h.eval_step)
    assert stop.best_validation_score_ == max(stop.validation_scores_)
    # the best evaluated weights are kept: scoring the held-out points again gives the best
    best = h.eval_step.index(h.best_step)
    assert stop.validation_scores_[best] == stop.best_validation_score_
    assert "train [" in capsys.readouterr().err  # verbose: a progress bar


def test_standardize_is_fitted_on_the_training_points_and_applied_to_new_ones():
    from sklearn.datasets import load_breast_cancer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = load_breast_cancer(return_X_y=True)
    kw = dict(width=256, steps=30, batch_size=100)
    clf = SparseReLUClassifier(**kw, standardize=True).fit(X[:400], y[:400])
    pipe = make_pipeline(StandardScaler(), SparseReLUClassifier(**kw)).fit(X[:400], y[:400])
    np.testing.assert_allclose(clf.net_.W, pipe[-1].net_.W, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(clf.predict(X[400:]), pipe.predict(X[400:]))
    assert clf.score(X[400:], y[400:]) > 0.9
    raw = SparseReLUClassifier(**kw).fit(X[:400], y[:400])
    assert raw.score(X[400:], y[400:]) < clf.score(X[400:], y[400:])
