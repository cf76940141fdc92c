"""scikit-learn's own estimator checks, and the estimators against the engines."""

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.utils.estimator_checks import parametrize_with_checks

import corrtree as ct
from corrtree.sklearn import SparseReLUClassifier, SparseReLURegressor

SMALL = dict(width=64, steps=40)


@parametrize_with_checks([SparseReLURegressor(**SMALL), SparseReLUClassifier(**SMALL)])
def test_sklearn_checks(estimator, check):
    check(estimator)


@pytest.mark.parametrize("engine", ["dense", "dtree", "wtree"])
def test_classifier_engines_agree(engine):
    X, y = load_digits(return_X_y=True)
    X, y = X[:300], y[:300]
    ref = SparseReLUClassifier(width=1024, steps=8, lr=0.25, engine="dense").fit(X, y)
    clf = SparseReLUClassifier(width=1024, steps=8, lr=0.25, engine=engine).fit(X, y)
    np.testing.assert_allclose(clf.net_.W, ref.net_.W, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(clf.predict(X), ref.predict(X))
    assert clf.score(X, y) > 0.7  # 10 classes: chance is 0.1


def test_regressor_matches_train():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 4))
    y = rng.standard_normal(50)
    reg = SparseReLURegressor(width=200, steps=3, lr=0.1).fit(X, y)
    net = ct.ShiftedReLUNet(4, 200, seed=0)
    Xn = ct.normalize_rows(X)
    ct.train(net, Xn, y, steps=3, lr=0.1, engine="dtree")
    np.testing.assert_allclose(reg.predict(X), net.predict(Xn), rtol=1e-9)
    assert reg.get_params()["engine"] == "auto"
    reg.set_params(engine="wtree")
    assert reg.engine == "wtree"
