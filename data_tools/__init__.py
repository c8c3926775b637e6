"""Command-line dataset converters and the shard verifier.

Each module is a ``python -m data_tools.<tool>`` entry point with a ``main(argv) -> exit code`` that tests
call in-process:

* ``from_folder``     -- an image folder (class = sub-folder, or unlabelled)
* ``from_lsun_lmdb``  -- an LSUN lmdb export (WebP/JPEG values), ADM-style crop to e.g. 256
* ``from_cifar10``    -- CIFAR-10's python pickle batches
* ``from_celeba``     -- CelebA ``img_align_celeba`` + ``list_eval_partition.txt``, 140 crop to 64
* ``from_digits``     -- scikit-learn's digits, the embedded default dataset
* ``verify``          -- re-hash and decode a converted directory against its manifest

The converters only list their source and say how to load one image; sharding, resuming, parallelism,
manifests and cards are the shared engine in :mod:`kacdist.data.convert`.
"""
