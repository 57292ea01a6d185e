"""featcache.sklearn.ImageFeatures: a scikit-learn transformer of images, keyed by content and
fingerprint, so that GridSearchCV runs the backbone once per image, also with n_jobs=2.

scikit-learn's estimator checks: with non-numeric input declared (two_d_array=False,
string=True), `check_estimator` runs what applies to such a transformer, and the tests
below also run every data-free generic check by name. Left out, because they feed numeric
(n_samples, n_features) matrices, which are not images: check_n_features_in,
check_transformer_preserve_dtypes, check_transformer_general, check_fit2d_*, check_dtype_*,
check_estimators_nan_inf and the other checks on random float arrays.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.utils import estimator_checks

from featcache.sklearn import COMPUTED_LOG, ImageFeatures

SMALL = {"weights": "none", "image_size": 32}


def _images(data_root):
    root = data_root / "tiny_flowers5" / "train"
    paths = sorted(str(p) for p in root.rglob("*.jpg"))
    labels = [p.split("/")[-2] for p in paths]
    return paths, labels


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_estimator_checks_that_apply():
    results = estimator_checks.check_estimator(ImageFeatures(**SMALL), on_fail=None)
    assert results and all(r["status"] == "passed" for r in results), results
    for name in ("check_no_attributes_set_in_init", "check_parameters_default_constructible",
                 "check_get_params_invariance", "check_set_params", "check_estimator_repr",
                 "check_estimator_cloneable", "check_valid_tag_types", "check_mixin_order",
                 "check_estimator_tags_renamed", "check_dont_overwrite_parameters",
                 "check_fit_check_is_fitted"):
        getattr(estimator_checks, name)("ImageFeatures", ImageFeatures(**SMALL))


def test_paths_arrays_and_pil_give_the_same_features(data_root, tmp_path):
    from PIL import Image

    paths, _ = _images(data_root)
    paths = paths[:4]
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    step = ImageFeatures(cache=tmp_path / "store", **SMALL).fit(paths)
    from_paths = step.transform(paths)
    from_arrays = ImageFeatures(**SMALL).fit(arrays).transform(np.stack(arrays))
    from_pil = ImageFeatures(**SMALL).fit(paths).transform([Image.fromarray(a) for a in arrays])
    assert from_paths.shape == (4, 1024) and from_paths.dtype == np.float32
    np.testing.assert_allclose(from_arrays, from_paths, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(from_pil, from_paths, rtol=1e-5, atol=1e-6)
    again = ImageFeatures(cache=tmp_path / "store", **SMALL).fit(paths).transform(paths[::-1])
    np.testing.assert_array_equal(again, from_paths[::-1])
    store = next((tmp_path / "store").iterdir())
    assert len((store / COMPUTED_LOG).read_text().split()) == 4  # the second call computed nothing
    # another setting is another fingerprint: a new store, never the old features
    ImageFeatures(cache=tmp_path / "store", weights="none", image_size=48).fit(paths).transform(paths)
    assert len(list((tmp_path / "store").iterdir())) == 2


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_grid_search_runs_the_backbone_once_per_image(data_root, tmp_path):
    paths, labels = _images(data_root)
    model = Pipeline([("features", ImageFeatures(cache=str(tmp_path / "store"), **SMALL)),
                      ("clf", LogisticRegression(max_iter=500))])
    search = GridSearchCV(model, {"clf__C": [0.1, 1.0]}, cv=3, n_jobs=2)
    search.fit(np.asarray(paths, dtype=object), labels)
    assert search.best_params_["clf__C"] in (0.1, 1.0)
    store = next((tmp_path / "store").iterdir())
    computed = (store / COMPUTED_LOG).read_text().split()
    assert sorted(computed) == sorted(set(computed)) and len(computed) == len(set(paths))
