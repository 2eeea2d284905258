"""Top-k accuracy as an `evaluate` metric module, loaded by local path so it works offline.

    metric = evaluate.load("metrics/top_k_accuracy")
    metric.compute(predictions=[[3, 1, 0], [2, 0, 1]], references=[1, 2], k=[1, 5])
    # {"top1": 0.5, "top5": 1.0}

`predictions` holds, per example, the class ids ranked best first (as many as the classifier ranked).
An example counts as correct at k when its reference is among its first k predictions; when fewer than k
classes were ranked (e.g. 3 classes and k=5), all ranked ones count, as in DINO's `eval_knn`.
"""

import datasets
import evaluate

_DESCRIPTION = "Share of examples whose reference label is among the first k ranked predictions."
_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[list[int]]`): per example, class ids ranked best first.
    references (`list[int]`): the true class id per example.
    k (`list[int]`, defaults to [1, 5]): the cut-offs to report.
Returns:
    `dict[str, float]`: "top{k}" -> accuracy in [0, 1] for each k.
"""


class TopKAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("int64")), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, k=(1, 5)):
        if len(predictions) == 0:
            raise ValueError("top_k_accuracy needs at least one example, got none")
        for cutoff in k:
            if int(cutoff) < 1:
                raise ValueError(f"k must be >= 1, got {cutoff}")
        results = {}
        for cutoff in k:
            hits = sum(int(ref in ranked[: int(cutoff)]) for ranked, ref in zip(predictions, references))
            results[f"top{int(cutoff)}"] = hits / len(references)
        return results
