"""The Evaluator's slices follow the input: a source slice only where the input may hold several files."""

import json

import pytest

from pipeline import configs
from pipeline.pipeline import create_pipeline


def _evaluator_slices(tmp_path, input_path, **kwargs) -> list[list[str]]:
    config = configs.PipelineConfig(dataset=configs.IMDB, input_path=input_path, output_dir=tmp_path, **kwargs)
    (evaluator,) = [c for c in create_pipeline(config).components if c.id == "Evaluator"]
    eval_config = json.loads(evaluator.exec_properties["eval_config"])
    return [spec.get("feature_keys", []) for spec in eval_config["slicing_specs"]]


@pytest.mark.parametrize("name, several", [("reviews.csv", False), ("aclImdb_v1.tar.gz", False),
                                           ("reviews-*.csv", True), ("part-[0-9].csv", True)])
def test_a_source_slice_only_when_the_input_may_hold_several_files(tmp_path, name, several):
    slices = _evaluator_slices(tmp_path, tmp_path / name)
    assert slices[:2] == [[], ["length_bucket"]]
    assert (["source"] in slices) is several and len(slices) == 2 + several


def test_spans_slice_by_source(tmp_path):
    (tmp_path / "span-1").mkdir()
    assert _evaluator_slices(tmp_path, tmp_path, input_spans=True) == [[], ["length_bucket"], ["source"]]


def test_leaving_the_source_slice_out_changes_nothing_else():
    from pipeline.pipeline import make_eval_config

    with_source, without = make_eval_config(configs.IMDB), make_eval_config(configs.IMDB, slice_by_source=False)
    assert list(with_source.metrics_specs) == list(without.metrics_specs)  # metrics, rating metrics, gates
    assert list(with_source.model_specs) == list(without.model_specs)
    assert [list(s.feature_keys) for s in with_source.slicing_specs] == [[], ["length_bucket"], ["source"]]
    assert [list(s.feature_keys) for s in without.slicing_specs] == [[], ["length_bucket"]]
