"""Dataset names with options, and reading TFDS datasets prepared on disk.

Two jobs that every dataset family ('tfds:', 'tfds_text:', 'tfds_captions:',
'text:') shares, done here once:

- **Names.** A dataset name is ``PREFIX + BODY`` optionally followed by
  ``?key=value&key=value``; `split_name` cuts it and `parse_options` checks
  the keys and converts the values, raising `ConfigError` naming the dataset
  and the bad option.
- **TFDS.** `TfdsRecords` opens a dataset already prepared as array_record in
  a data_dir (``tfds.data_source`` without the download), after checking
  that the name is a registered builder or is prepared there, that it is
  prepared, and that it has the features the caller reads; each failure is
  a `DataError` naming the dataset and the data_dir.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Sequence

from jaxssl.data.root import unset_root_note
from jaxssl.errors import ConfigError, DataError


def split_name(name: str, prefix: str) -> tuple[str, str]:
    """'PREFIXBODY?k=v&...' -> ('BODY', 'k=v&...'); the query is '' when there is none."""
    body, _, query = name[len(prefix):].partition("?")
    return body, query


def parse_options(name: str, query: str, option_types: dict[str, Callable[[str], Any]]) -> dict:
    """'k=v&k2=v2' -> {k: option_types[k](v)}.

    Raises:
      ConfigError: an item is not key=value, the key is unknown, or the value
        does not convert (e.g. 'length=abc'); the message names dataset `name`.
    """
    options = {}
    for item in filter(None, query.split("&")):
        key, eq, value = item.partition("=")
        if not eq or key not in option_types:
            raise ConfigError(f"dataset {name!r}: bad option {item!r}; "
                              f"options are {', '.join(option_types)} as key=value")
        try:
            options[key] = option_types[key](value)
        except ValueError:
            raise ConfigError(f"dataset {name!r}: option {key}={value!r} is not "
                              f"{getattr(option_types[key], '__name__', 'valid')}") from None
    return options


def feature(tree, path: str):
    """tree['a']['b'] for path 'a/b' (a TFDS record or FeaturesDict)."""
    for part in path.split("/"):
        tree = tree[part]
    return tree


class TfdsRecords:
    """Random access to a TFDS dataset prepared as array_record in data_dir.

    ``self[i]`` is record i as TFDS stores it (a dict of features); subclasses
    turn it into their records. ``self.features`` is the dataset's FeaturesDict.

    Args:
      name: TFDS name, e.g. 'mnist' or 'cifar10:3.0.2'.
      split: TFDS split, e.g. 'train' or 'test[:10%]'.
      data_dir: the TFDS data directory, already resolved (None: TFDS's default).
      keys: feature paths ('a/b' for nested ones) the caller reads.

    Raises:
      DataError: the name is neither registered nor prepared in data_dir, the
        dataset is not prepared there, has no split `split`, or lacks one of `keys`.
    """

    def __init__(self, name: str, split: str, data_dir: str | os.PathLike | None,
                 keys: Sequence[str]):
        import tensorflow_datasets as tfds

        # For a dataset not prepared there, tfds logs a warning ("Variant folder ... has no
        # dataset_info.json") that says less than the DataError below, on a line before it.
        absl_logger = logging.getLogger("absl")
        level = absl_logger.level
        absl_logger.setLevel(logging.ERROR)
        try:
            builder = tfds.builder(name, data_dir=data_dir)
            prepared = builder.is_prepared()
        except tfds.core.DatasetNotFoundError:
            raise DataError(f"tfds dataset {name!r} is neither a registered TFDS builder nor "
                            f"prepared in data_dir={data_dir}") from None
        finally:
            absl_logger.setLevel(level)
        if not prepared:
            note = unset_root_note(data_dir) if data_dir else ""
            raise DataError(f"tfds dataset {name!r} is not prepared in data_dir={data_dir}{note} "
                            f"(looked in {builder.data_dir}); prepare it first, e.g. "
                            f"`tfds build {name} --data_dir=... --file_format=array_record`")
        self.features = builder.info.features
        for key in keys:
            try:
                feature(self.features, key)
            except KeyError:
                raise DataError(f"tfds dataset {name!r} has no feature {key!r}; features: "
                                f"{sorted(self.features)}") from None
        try:
            self._records = tfds.data_source(name, split=split, data_dir=data_dir,
                                             download=False)
        except ValueError as error:  # TFDS's "Unknown split" (and other bad split specs)
            raise DataError(f"tfds dataset {name!r} in data_dir={data_dir}: bad split "
                            f"{split!r} (its splits: {sorted(builder.info.splits)}; "
                            f"TFDS says: {error})") from None
        self._description = (f"{type(self).__name__}({name!r}, split={split!r}, "
                             f"data_dir={data_dir!r})")

    def __len__(self) -> int:
        return len(self._records)

    def __repr__(self) -> str:
        return self._description

    def __getitem__(self, index: int) -> dict:
        """Record `index` as TFDS stores it; DataError naming the dataset and the index if
        it does not read or decode (records are read lazily, often in a grain worker
        thread or process, which passes the DataError on to the training loop)."""
        try:
            return self._records[index]
        except MemoryError:
            raise
        except Exception as error:  # any failure of TFDS/array_record to read this record
            raise DataError(f"{self._description}: record {index} does not read or decode "
                            f"({type(error).__name__}: {error})") from error
