"""embaug_jax.report.fits: the embeddings' distance scores per trial (against direct calls on
the trial's rows) and each member's post-hoc fits on its selection rows."""

import numpy as np
import pytest

from embaug_jax import evaluate
from embaug_jax.dataset import EmbeddingDataset
from embaug_jax.report import fits

pytestmark = pytest.mark.usefixtures("fast_compile")


def test_embedding_scores_are_the_detectors_on_each_trials_rows(sweep_with_dataset):
    result, dataset = sweep_with_dataset(0)
    scores = fits.embedding_scores(result, dataset)
    assert len(scores) == result.val_labels.shape[0]
    for t, trial in enumerate(scores):
        train_x = dataset.embeddings[result.train_idx[t]]
        val_x = dataset.embeddings[result.val_idx[t]]
        # In the order of the validation rows, whatever order the rows were read in.
        np.testing.assert_allclose(trial["mahalanobis"], evaluate.mahalanobis_scores(
            train_x, dataset.labels[result.train_idx[t]], val_x), rtol=1e-9)
        np.testing.assert_allclose(trial["knn"], evaluate.knn_scores(train_x, val_x), rtol=1e-6)
        # The held-out class is far from every training class: the distances find it.
        is_none = ~result.seen_mask[t][result.val_labels[t]]
        assert trial["mahalanobis"][is_none].mean() > trial["mahalanobis"][~is_none].mean()


def test_embedding_scores_refuse_another_dataset_or_no_splits(sweep_with_dataset):
    result, dataset = sweep_with_dataset(1)
    shuffled = EmbeddingDataset(dataset.embeddings, np.roll(dataset.labels, 1),
                                dataset.class_names)
    with pytest.raises(ValueError, match="not the one this sweep trained on"):
        fits.embedding_scores(result, shuffled)
    short = EmbeddingDataset(dataset.embeddings[:50], dataset.labels[:50], dataset.class_names)
    with pytest.raises(ValueError, match="not the one this sweep trained on"):
        fits.embedding_scores(result, short)
    result.train_idx = None
    with pytest.raises(ValueError, match="do not record"):
        fits.embedding_scores(result, dataset)


def test_fit_members_fit_each_member_on_its_trials_selection_rows(sweep_with_dataset):
    result, dataset = sweep_with_dataset(2)
    scores = fits.embedding_scores(result, dataset)
    selection = np.random.default_rng(0).random(result.val_labels.shape) < 0.5
    got = fits.fit_members(result, [0, 4], selection, scores=scores,
                           detectors=evaluate.OUTPUT_DETECTORS)
    for i in (0, 4):
        t = result.members[i]["trial"]
        rows = selection[t]
        want = evaluate.fit_posthoc(result.val_probs[i][rows], result.val_labels[t][rows],
                                    result.seen_mask[t],
                                    embedding_scores={k: v[rows] for k, v in scores[t].items()})
        assert got[i].temperature == want.temperature and got[i].threshold == want.threshold
        assert got[i].detector == want.detector
        np.testing.assert_array_equal(got[i].vector.scale, want.vector.scale)


def test_output_detectors_follow_the_head():
    assert fits.output_detectors("sigmoid") == evaluate.OUTPUT_DETECTORS
    assert fits.output_detectors("softmax") == ("msp",)
    with pytest.raises(ValueError, match="choose one of"):
        fits.output_detectors("tanh")
