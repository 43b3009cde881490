"""fastnn.sklearn.MLPClassifier.fit against scikit-learn's MLPClassifier.fit: the same
hyperparameters (scikit-learn's defaults) and number of epochs, on the same data, in
float64 (where fastnn follows scikit-learn step for step) and in float32 (both libraries
train float32 data in float32) (`fastnn.tools.bench.sklearn_fit`). The 100,000-row set
runs a single epoch per call.

Threads: scikit-learn's BLAS runs on fastnn's thread count; fastnn runs as configured
(its kernels split GEMMs over their own team and keep the BLAS they call single-threaded:
a BLAS limit around its fit would make that BLAS multi-threaded inside the team).
"""
import contextlib

import numpy as np
import pytest

pytest.importorskip("sklearn")

import fastnn  # noqa: E402
from fastnn.tools.bench import _all_threads, sklearn_fit  # noqa: E402
from conftest import measure  # noqa: E402

#: dataset -> epochs per timed fit
FITS = {"digits": 10, "synthetic": 1}


@pytest.mark.parametrize("library", ["fastnn", "sklearn"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("dataset", sorted(FITS))
def test_mlp_classifier_fit(benchmark, dataset, dtype, library):
    fit = sklearn_fit(library, dataset, FITS[dataset], np.dtype(dtype))
    threads = (_all_threads(fastnn.get_num_threads()) if library == "sklearn"
               else contextlib.nullcontext())
    with threads:
        measure(benchmark, "MLPClassifier.fit %s %s, %d epochs"
                % (dataset, dtype, FITS[dataset]), fit)
