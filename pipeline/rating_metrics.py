"""The rating head's metrics for TFMA: mean absolute error and Pearson's r, in one pass.

The Evaluator names this metric by class and module (pipeline.make_eval_config).
Both figures come from one accumulator of sums (count, sum of |error|, sums,
sums of squares and of products), so TFMA looks each example up once per slice
instead of once per metric, and merges accumulators by adding them. It replaced
TFMA's MeanAbsoluteError beside a Keras metric wrapped by TFMA: 8.6 s of the IMDB
Evaluator's 44 then, about 0.5 s now (docs/experiments.md, bench/evaluator_profile.py).

An example without a rating (label 0 or absent: a source that carries none) is
left out of both, as the rating loss leaves it out (models/rating.py).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Optional

import apache_beam as beam
import numpy as np
from tensorflow_model_analysis.metrics import metric_types, metric_util
from tensorflow_model_analysis.proto import config_pb2

from models import features

MAE = features.RATING_MAE_METRIC
PEARSON_R = features.RATING_PEARSON_METRIC


class RatingMetrics(metric_types.Metric):
    """`rating_mae` (in stars) and `rating_pearson_r` over the rated examples of a slice."""

    def __init__(self, mae_name: str = MAE, pearson_name: str = PEARSON_R):
        super().__init__(metric_util.merge_per_key_computations(_rating_computations),
                         mae_name=mae_name, pearson_name=pearson_name)


metric_types.register_metric(RatingMetrics)


def _rating_computations(mae_name: str = MAE, pearson_name: str = PEARSON_R,
                         eval_config: Optional[config_pb2.EvalConfig] = None, model_name: str = "",
                         output_name: str = "", sub_key: Optional[metric_types.SubKey] = None,
                         aggregation_type: Optional[metric_types.AggregationType] = None,
                         class_weights: Optional[dict] = None,
                         example_weighted: bool = False) -> metric_types.MetricComputations:
    keys = [metric_types.MetricKey(name=name, model_name=model_name, output_name=output_name, sub_key=sub_key,
                                   example_weighted=example_weighted) for name in (mae_name, pearson_name)]
    combiner = _RatingCombiner(keys, eval_config, example_weighted)
    return [metric_types.MetricComputation(keys=keys, preprocessors=None, combiner=combiner)]


@dataclasses.dataclass
class RatingSums:
    """Weighted sums over the rated examples; x is the predicted rating, y the true one."""
    n: float = 0.0
    abs_error: float = 0.0
    sx: float = 0.0
    sy: float = 0.0
    sxx: float = 0.0
    syy: float = 0.0
    sxy: float = 0.0

    def add(self, x: float, y: float, weight: float) -> None:
        self.n += weight
        self.abs_error += weight * abs(x - y)
        self.sx += weight * x
        self.sy += weight * y
        self.sxx += weight * x * x
        self.syy += weight * y * y
        self.sxy += weight * x * y

    def merge(self, other: "RatingSums") -> None:
        for field in dataclasses.fields(self):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))

    def mae(self) -> float:
        return self.abs_error / self.n if self.n > 0 else math.nan

    def pearson_r(self) -> float:
        """0 when either side has no variance (a constant prediction), NaN without rated examples."""
        if self.n <= 0:
            return math.nan
        covariance = self.n * self.sxy - self.sx * self.sy
        variance_x = max(self.n * self.sxx - self.sx * self.sx, 0.0)
        variance_y = max(self.n * self.syy - self.sy * self.sy, 0.0)
        denominator = math.sqrt(variance_x * variance_y)
        return covariance / denominator if denominator > 0 else 0.0


class _RatingCombiner(beam.CombineFn):

    def __init__(self, keys: list[metric_types.MetricKey], eval_config: Optional[config_pb2.EvalConfig],
                 example_weighted: bool):
        self._mae_key, self._pearson_key = keys
        self._eval_config = eval_config
        self._example_weighted = example_weighted

    def create_accumulator(self) -> RatingSums:
        return RatingSums()

    def add_input(self, accumulator: RatingSums, element: metric_types.StandardMetricInputs) -> RatingSums:
        key = self._mae_key
        for label, prediction, weight in metric_util.to_label_prediction_example_weight(
                element, eval_config=self._eval_config, model_name=key.model_name, output_name=key.output_name,
                sub_key=key.sub_key, example_weighted=self._example_weighted, allow_none=True):
            if label is None or np.size(label) == 0 or prediction is None:
                continue  # a source without ratings
            y = float(np.asarray(label, np.float64).reshape(-1)[0])
            if y > 0:
                accumulator.add(float(np.asarray(prediction, np.float64).reshape(-1)[0]), y,
                                float(np.asarray(weight, np.float64).reshape(-1)[0]))
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[RatingSums]) -> RatingSums:
        accumulators = iter(accumulators)
        result = next(accumulators)
        for accumulator in accumulators:
            result.merge(accumulator)
        return result

    def extract_output(self, accumulator: RatingSums) -> dict[metric_types.MetricKey, float]:
        return {self._mae_key: accumulator.mae(), self._pearson_key: accumulator.pearson_r()}
