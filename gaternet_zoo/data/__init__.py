"""Data layer for training recipes: load image classification data and feed it fast on small CPUs.

Typical use::

    source = load_image_dataset("builtin:cifar10-subset")  # or "uoft-cs/cifar10", a local folder, a Dataset ...
    data = build_pipeline(source)  # decode-once tensors for small images, timm transforms for large ones
    loader = DataLoader(data.train_dataset, batch_size=128, shuffle=True, num_workers=data.num_workers)
    for step, batch in enumerate(loader):
        x = data.prepare_batch(batch["pixel_values"], train=True, generator=augmentation_generator(seed, epoch, step))
"""

from .augment import CIFAR10_MEAN, CIFAR10_STD, Normalize, RandomCropFlip, augmentation_generator, compute_mean_std
from .decode import DecodedImageDataset, DecodedImages, ImageDecodeError, decode_images, default_num_proc
from .labels import check_label_range, class_count_from_metadata, resolve_num_classes
from .pipeline import (
    DataPipeline,
    PipelineKind,
    build_pipeline,
    choose_pipeline_kind,
    create_timm_transforms,
    default_num_workers,
)
from .sources import (
    BUILTIN_DATASETS,
    DEFAULT_SOURCE,
    DataSourceError,
    ImageDataSource,
    check_class_count,
    load_image_dataset,
)

__all__ = [
    "BUILTIN_DATASETS",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "DEFAULT_SOURCE",
    "DataPipeline",
    "DataSourceError",
    "DecodedImageDataset",
    "DecodedImages",
    "ImageDataSource",
    "ImageDecodeError",
    "Normalize",
    "PipelineKind",
    "RandomCropFlip",
    "augmentation_generator",
    "build_pipeline",
    "check_class_count",
    "check_label_range",
    "class_count_from_metadata",
    "choose_pipeline_kind",
    "compute_mean_std",
    "create_timm_transforms",
    "decode_images",
    "default_num_proc",
    "default_num_workers",
    "load_image_dataset",
    "resolve_num_classes",
]
