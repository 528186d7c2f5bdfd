"""Datasets prepared by libdpo as TRL's trainers prepare theirs (rows of text, conversations or
token ids in; token ids kept), and how a trainer's processing_class becomes a dpo.Tokenizer."""
import ctypes
import json
import logging
import os
import tempfile
from collections.abc import Mapping
from ctypes import c_void_p

from . import _lib
from .errors import InvalidArgumentError
from .model import Handle, _jsonable
from .tokenizer import Tokenizer

logger = logging.getLogger("dpo")

# Rows cross into the library in chunks of this many (one JSON array per call).
_CHUNK_ROWS = 256


class PreparedDataset(Handle):
    """A dataset tokenized for one trainer: ``len(ds)`` rows, ``ds[i]`` a dict as TRL's processed
    dataset holds it (``prompt_ids``, ``chosen_ids``, ``rejected_ids`` for DPO; ``input_ids`` and
    ``completion_mask`` / ``assistant_masks`` where the row has them for SFT). ``info`` has the
    counts of rows read, kept, dropped (as TRL drops them) and truncated by ``max_length``."""

    _free = _lib.lib.dpo_dataset_free

    def _info(self):
        info = _lib.new(_lib.DatasetInfo)
        _lib.check(_lib.lib.dpo_dataset_get_info(self._handle, ctypes.byref(info)))
        return info

    @property
    def info(self):
        i = self._info()
        return {"rows": i.rows, "kept": i.kept, "dropped": i.dropped, "truncated": i.truncated,
                "format": i.format.decode()}

    def __len__(self):
        return self._info().kept

    def __getitem__(self, index):
        n = len(self)
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(n))]
        if isinstance(index, bool) or not hasattr(index, "__index__"):
            raise TypeError("dataset indices must be integers or slices, not %s" % type(index).__name__)
        index = index.__index__()  # numpy integers too
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError("dataset index %d out of range (%d rows)" % (index, n))
        return json.loads(_lib.text_out(_lib.lib.dpo_dataset_row_json, self._handle, index))

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __repr__(self):
        info = self.info
        return "PreparedDataset(%d rows, %s, dropped=%d, truncated=%d)" % (
            info["kept"], info["format"] or "empty", info["dropped"], info["truncated"])


def _row_text(row, index):
    if not isinstance(row, Mapping):
        raise InvalidArgumentError("row %d: a row must be a dict of columns, got %s" % (index, type(row).__name__))
    try:
        return json.dumps(dict(row), default=_jsonable, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InvalidArgumentError("row %d: %s" % (index, e)) from None


def prepare(create, trainer_handle, tokenizer, data, name):
    """A PreparedDataset of ``data`` for a trainer: a path to a JSONL / JSON file, a
    PreparedDataset (used as it is), or any iterable of row dicts (a list, a generator, a
    ``datasets.Dataset``), handed over in chunks so that no text is held twice."""
    if data is None:
        return None
    if isinstance(data, PreparedDataset):
        return data
    out = c_void_p()
    _lib.check(create(trainer_handle, tokenizer._handle if tokenizer is not None else None, ctypes.byref(out)))
    ds = PreparedDataset(out.value)
    if isinstance(data, (str, bytes, os.PathLike)):
        _lib.check(_lib.lib.dpo_dataset_add_file(ds._handle, _lib.encode_path(data)))
        return _counted(ds, name)
    if isinstance(data, Mapping):
        raise InvalidArgumentError("%s must be rows (a list of dicts, a datasets.Dataset) or a file path, got a dict" % name)
    try:
        rows = iter(data)
    except TypeError:
        raise InvalidArgumentError("%s must be rows (a list of dicts, a datasets.Dataset) or a file path, got %s"
                                   % (name, type(data).__name__)) from None
    chunk, index = [], 0
    for row in rows:
        chunk.append(_row_text(row, index))
        index += 1
        if len(chunk) == _CHUNK_ROWS:
            _add(ds, chunk)
            chunk = []
    if chunk:
        _add(ds, chunk)
    if index == 0:
        raise InvalidArgumentError("%s is empty" % name)
    return _counted(ds, name)


def _counted(ds, name):
    """Logs what TRL would: rows dropped and truncated by max_length (nothing is lost silently)."""
    info = ds.info
    if info["dropped"] or info["truncated"]:
        logger.warning("%s: %d rows (%s): %d dropped as TRL drops them (the prompt fills max_length), "
                       "%d truncated to max_length", name, info["rows"], info["format"], info["dropped"],
                       info["truncated"])
    return ds


def _add(ds, texts):
    payload = ("[" + ",".join(texts) + "]").encode("utf-8", "surrogatepass")
    _lib.check(_lib.lib.dpo_dataset_add_rows(ds._handle, payload, len(payload)))


def resolve_tokenizer(processing_class, model):
    """processing_class as a dpo.Tokenizer: a dpo.Tokenizer as it is; a transformers tokenizer (or
    anything with ``save_pretrained``) through the files it saves, so the same tokenizer.json and
    chat template drive the engine; None: the model's own tokenizer if it was loaded from files that
    have one, else None (datasets of token ids only)."""
    if processing_class is None:
        source = getattr(model, "_source", None)
        if source is None:
            return None
        try:
            return Tokenizer.from_pretrained(source)
        except Exception:
            return None
    if isinstance(processing_class, Tokenizer):
        return processing_class
    save = getattr(processing_class, "save_pretrained", None)
    if not callable(save):
        raise InvalidArgumentError("processing_class must be a dpo.Tokenizer or a tokenizer with save_pretrained() "
                                   "(e.g. transformers' AutoTokenizer), got %s" % type(processing_class).__name__)
    with tempfile.TemporaryDirectory(prefix="dpo-tokenizer-") as tmp:
        save(tmp)
        return Tokenizer.from_pretrained(tmp)
