"""Re-evaluate the models of a tiling study with every inference preset (docs/studies.md).

A tiling study trains each network with each preset, so two of its models differ in their
training as well as in how their predictions are stitched. This script isolates the stitching:
it loads every child's logged model from MLflow and predicts the evaluation images again with
each tiling preset (sum stitching), reporting total Dice, class mean Dice and the seam error
(pixels within 4 px of the 256-px no-overlap tile boundaries against the rest).

    python docs/results/tiling_inference.py --store mlruns --study tiling-phantoms \
        --data data/lung-phantoms/test
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import numpy as np

from seglab.io.dataset import scan_dataset
from seglab.metrics import confusion_matrix, dice_from_confusion
from seglab.studies.runner import TAG_CHILD_KEY, TAG_PARENT, TAG_STUDY, result_from_run
from seglab.studies.tiling import SeamErrors, _load_model, seam_errors
from seglab.tracking.store import resolve_store
from seglab.workflows.analysis import model_input

PRESETS = ("no-overlap", "uniform-81")


def main() -> None:
    """Print the Markdown table of every child model x inference preset."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="mlruns")
    parser.add_argument("--study", required=True, help="the recipe's name")
    parser.add_argument("--data", required=True, help="labelled evaluation images")
    args = parser.parse_args()
    store = resolve_store(args.store)
    client = store.client()
    experiment = client.get_experiment_by_name("studies").experiment_id
    parents = client.search_runs(
        [experiment],
        filter_string=(
            f"tags.`{TAG_STUDY}` = '{args.study}' and tags.`seglab.study_kind` = 'tiling'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    children = client.search_runs(
        [experiment],
        filter_string=f"tags.`{TAG_PARENT}` = '{parents[0].info.run_id}' "
        "and attributes.status = 'FINISHED'",
        order_by=["tags.`seglab.child_key` ASC"],
    )
    dataset = scan_dataset(args.data)
    samples = [dataset.load(s) for s in dataset.samples]
    columns = ["trained with", "inferred with", "total Dice", "class mean", "seam err", "other err"]
    print("| " + " | ".join(columns) + " |")
    print("|---|---|---|---|---|---|")
    for run in children:
        key = run.data.tags[TAG_CHILD_KEY]
        result = result_from_run(_Child(key), run, skipped=True)
        with tempfile.TemporaryDirectory() as tmp:
            model = _load_model(store, result, Path(tmp) / "model")
            trained = model.settings
            for preset in PRESETS:
                model.settings = dataclasses.replace(trained, tiling_preset=preset)
                matrix = np.zeros((trained.num_classes, trained.num_classes), np.int64)
                seams = SeamErrors()
                for sample in samples:
                    array, _ = model_input(model, sample.image, sample.axes)
                    labels = model.labels(model.probabilities(array))
                    matrix += confusion_matrix(labels, sample.label, trained.num_classes)
                    seams = seams + seam_errors(labels, sample.label)
                scores = dice_from_confusion(matrix)
                print(
                    f"| {key.split(' repeat')[0]} | {preset} | {100 * scores.total:.1f} | "
                    f"{100 * scores.mean:.1f} | {100 * seams.seam_rate:.1f} | "
                    f"{100 * seams.other_rate:.1f} |"
                )


@dataclasses.dataclass(frozen=True)
class _Child:
    key: str


if __name__ == "__main__":
    main()
