"""Class counts and label ranges: where a training or evaluation run gets its number of classes, and its check.

A class count is taken only from the data's ``ClassLabel`` metadata or from a declared ``num_classes``, never
inferred from the largest label seen (one stray label 99 would otherwise make a 100-class head). Labels outside
``[0, num_classes)`` are reported with their rows.
"""
from __future__ import annotations

import datasets

from .sources import DataSourceError, ImageDataSource, _label_array, check_label_range

__all__ = ['check_label_range', 'class_count_from_metadata', 'resolve_num_classes']

def class_count_from_metadata(source: ImageDataSource) -> int | None:
    """Number of classes of the label column's ``ClassLabel`` feature, or ``None`` for plain integer labels."""
    feature = source.train.features[source.label_column]
    return feature.num_classes if isinstance(feature, datasets.ClassLabel) else None


def resolve_num_classes(source: ImageDataSource, declared: int | None) -> int:
    """The class count of a run: ``declared`` (checked against the metadata), else the ``ClassLabel`` metadata.

    Every split of ``source`` is then checked against it with :func:`check_label_range`.

    Args:
        source: The loaded data.
        declared: The run's ``num_classes`` setting, or ``None``.

    Raises:
        DataSourceError: Plain integer labels and no declared count; a declared count smaller than the metadata's;
            a label out of range.
    """
    metadata = class_count_from_metadata(source)
    if declared is None and metadata is None:
        highest = max(int(_label_array(ds, source.label_column).max(initial=-1)) for ds in source.splits().values())
        raise DataSourceError(
            f'{source.description} has plain integer labels in {source.label_column!r} (no ClassLabel metadata), so '
            f'its number of classes is unknown (the largest label is {highest}); set num_classes.')
    if declared is not None and metadata is not None and declared < metadata:
        raise DataSourceError(
            f'num_classes is {declared} but {source.description} has {metadata} classes in its ClassLabel '
            f'metadata; set num_classes to at least {metadata} (or leave it unset).')
    num_classes = declared if declared is not None else metadata
    for split, ds in source.splits().items():
        check_label_range(ds, source.label_column, num_classes, f'the {split} split of {source.description}')
    return num_classes
