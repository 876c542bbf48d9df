"""The data of a training run: splits (with a validation split held out of the training data), class count, pipeline."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import datasets
import torch

from ..data import DataPipeline, ImageDataSource, build_pipeline, load_image_dataset, resolve_num_classes
from ._run_dir import RecipeError

__all__ = ['TrainingData', 'load_training_data']


@dataclass
class TrainingData:
    """What a training run feeds on.

    Attributes:
        source: The loaded data after the cuts (``eval`` is the split evaluated every epoch).
        pipeline: Input pipeline (``prepare_batch``, augmentation, normalisation).
        num_classes: Class count: declared or from ``ClassLabel`` metadata, never inferred from the labels.
        label_names: Name of each class.
        train: Training dataset.
        eval: Dataset evaluated every epoch: the validation rows with ``val_split``, else the eval split.
        eval_name: ``"validation"`` or the eval split's name.
        test: The eval split, evaluated once at the end (``val_split`` with ``test_at_end``), else ``None``.
    """

    source: ImageDataSource
    pipeline: DataPipeline
    num_classes: int
    label_names: list[str]
    train: torch.utils.data.Dataset
    eval: torch.utils.data.Dataset
    eval_name: str
    test: torch.utils.data.Dataset | None


def load_training_data(data: Any, *, model: torch.nn.Module, train_split: str = 'train', eval_split: str = 'test',
                       image_column: str | None = None, label_column: str | None = None,
                       num_classes: int | None = None, val_split: int | None = None, test_at_end: bool = False,
                       max_train_samples: int | None = None, max_eval_samples: int | None = None,
                       channels_last: bool = True) -> TrainingData:
    """Load ``data``, check its class count and labels, hold out a validation split and build the pipeline.

    Args:
        data: Any source ``load_image_dataset`` takes.
        model: The model to train (its ``pretrained_cfg`` drives the pipeline).
        train_split: Training split.
        eval_split: Evaluation (test) split.
        image_column: Image column (``None``: automatic).
        label_column: Label column (``None``: automatic).
        num_classes: Declared class count; ``None``: the ``ClassLabel`` metadata (required without it).
        val_split: Hold out the LAST ``val_split`` training rows as the validation split evaluated every epoch (so
            that options are chosen without the test split); ``None``: evaluate ``eval_split`` every epoch.
        test_at_end: With ``val_split``, also prepare ``eval_split`` for one evaluation at the end.
        max_train_samples: Keep the first N training rows (after the hold-out).
        max_eval_samples: Keep the first N rows of the evaluated split(s).
        channels_last: Channels-last model input.

    Raises:
        RecipeError: No evaluation split, or a validation split that leaves no training rows.
        DataSourceError: Unknown class count or labels out of range (with their rows).
    """
    source = load_image_dataset(data, split_train=train_split, split_eval=eval_split, image_column=image_column,
                                label_column=label_column, num_classes=num_classes)
    if source.eval is None:
        raise RecipeError(f'{source.description} has no evaluation split; set eval_split')
    num_classes = resolve_num_classes(source, num_classes)  # Every row of every split, before any cut.
    test, total = None, len(source.train)
    if val_split:
        if val_split >= total:
            raise RecipeError(f'val_split {val_split} leaves no training images of the {total}; lower it')
        test = source.eval if test_at_end else None
        source = replace(source, train=source.train.select(range(total - val_split)),
                         eval=source.train.select(range(total - val_split, total)))
    if max_train_samples:
        source = replace(source, train=source.train.select(range(min(max_train_samples, len(source.train)))))
    if max_eval_samples:
        source = replace(source, eval=source.eval.select(range(min(max_eval_samples, len(source.eval)))))
        test = test.select(range(min(max_eval_samples, len(test)))) if test is not None else None
    n_eval = len(source.eval)
    if test is not None:  # One pipeline (one decode pass, one normalisation) for the validation and test rows.
        source = replace(source, eval=datasets.concatenate_datasets([source.eval, test]))
    pipeline = build_pipeline(source, model=model, channels_last=channels_last)
    evaluation, test_ds = pipeline.eval_dataset, None
    if test is not None:
        evaluation = torch.utils.data.Subset(pipeline.eval_dataset, range(n_eval))
        test_ds = torch.utils.data.Subset(pipeline.eval_dataset, range(n_eval, len(source.eval)))
    names = list(source.class_names) if len(source.class_names) == num_classes else [str(i) for i in
                                                                                      range(num_classes)]
    return TrainingData(source, pipeline, num_classes, names, pipeline.train_dataset, evaluation,
                        'validation' if val_split else eval_split, test_ds)
