"""Linear-probe and k-NN accuracy: how much label information the embeddings hold.

Both fit on one manifest's embeddings (the train split) and score on
another's (the test split), with scikit-learn:

* **linear probe**: multinomial logistic regression on the unit vectors. Its
  inverse regularisation ``C`` is chosen on a stratified validation fifth of
  the training rows from :data:`C_GRID` (or given), then refitted on all of them.
* **k-NN**: the majority label of the ``k`` most cosine-similar training rows
  (a tie between labels goes to the first in sorted order, scikit-learn's rule).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)


def linear_probe(train_x: np.ndarray, train_y: Sequence[str], test_x: np.ndarray,
                 test_y: Sequence[str], C: float | None = None, seed: int = 0,
                 max_iter: int = 1000) -> dict[str, Any]:
    """Top-1 accuracy of a logistic-regression probe; ``C`` None picks it on a validation split."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    train_y, test_y = np.asarray(train_y), np.asarray(test_y)
    validation = {}
    if C is None:
        _, counts = np.unique(train_y, return_counts=True)
        stratify = train_y if counts.min() >= 2 else None  # a class of one cannot be split
        fit_x, val_x, fit_y, val_y = train_test_split(train_x, train_y, test_size=0.2,
                                                      random_state=seed, stratify=stratify)
        for c in C_GRID:
            model = LogisticRegression(C=c, max_iter=max_iter).fit(fit_x, fit_y)
            validation[c] = float(model.score(val_x, val_y))
        C = max(C_GRID, key=lambda c: (validation[c], -c))  # the strongest regularisation on ties
    model = LogisticRegression(C=C, max_iter=max_iter).fit(train_x, train_y)
    known = np.isin(test_y, model.classes_)
    return {"acc1": float(np.mean(model.predict(test_x) == test_y)), "C": float(C),
            "validation_acc1": {str(c): a for c, a in validation.items()},
            "n_train": int(len(train_y)), "n_test": int(len(test_y)),
            "test_rows_with_unseen_labels": int((~known).sum())}


def knn_accuracy(train_x: np.ndarray, train_y: Sequence[str], test_x: np.ndarray,
                 test_y: Sequence[str], k: int = 10) -> dict[str, Any]:
    """Top-1 accuracy of a cosine k-nearest-neighbour majority vote."""
    from sklearn.neighbors import KNeighborsClassifier

    k = min(k, len(train_y))
    model = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute").fit(train_x, train_y)
    return {"acc1": float(np.mean(model.predict(test_x) == np.asarray(test_y))), "k": k}
