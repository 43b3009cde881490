"""fastnn.sklearn.MLPClassifier.fit against scikit-learn's MLPClassifier.fit: the same
hyperparameters (scikit-learn's defaults) and number of epochs, float64 as scikit-learn
trains float64 data (`fastnn.tools.bench.sklearn_fit`). scikit-learn's BLAS runs on
fastnn's thread count. The 100,000-row set runs a single epoch per call.
"""
import pytest

pytest.importorskip("sklearn")

import fastnn  # noqa: E402
from fastnn.tools.bench import _all_threads, sklearn_fit  # noqa: E402
from conftest import measure  # noqa: E402

#: dataset -> epochs per timed fit
FITS = {"digits": 10, "synthetic": 1}


@pytest.mark.parametrize("library", ["fastnn", "sklearn"])
@pytest.mark.parametrize("dataset", sorted(FITS))
def test_mlp_classifier_fit(benchmark, dataset, library):
    fit = sklearn_fit(library, dataset, FITS[dataset])
    with _all_threads(fastnn.get_num_threads()):
        measure(benchmark, "MLPClassifier.fit %s, %d epochs" % (dataset, FITS[dataset]), fit)
