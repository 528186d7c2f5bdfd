"""Python batches (lists of dicts of token lists, numpy arrays accepted) -> CSR ctypes structs."""
import ctypes
from array import array
from ctypes import POINTER, c_double, c_int32, c_int64

from . import _lib
from .errors import InvalidArgumentError


def _as_list(x):
    """Lists, tuples, ranges and numpy arrays/scalars as plain Python values."""
    return x.tolist() if hasattr(x, "tolist") else x


def token_ids(seq, what):
    """One token list as array('i'); errors name `what` (e.g. "pair 0: chosen_ids")."""
    seq = _as_list(seq)
    if isinstance(seq, (str, bytes)) or not hasattr(seq, "__iter__"):
        raise InvalidArgumentError("%s must be a list of token ids, got %r" % (what, type(seq).__name__))
    out = array("i")
    for j, t in enumerate(seq):
        if isinstance(t, bool) or not isinstance(t, int):
            if hasattr(t, "__index__") and not isinstance(t, bool):
                t = t.__index__()
            else:
                raise InvalidArgumentError("%s[%d] = %r is not an integer token id" % (what, j, t))
        if not -2**31 <= t < 2**31:
            raise InvalidArgumentError("%s[%d] = %d is outside the vocabulary (and the int32 range)" % (what, j, t))
        out.append(t)
    return out


class Lists:
    """CSR token lists built from Python sequences; keeps the buffers alive with the struct."""

    def __init__(self, lists, names):
        self.ids = array("i")
        offsets = array("q", [0])
        for seq, what in zip(lists, names):
            self.ids.extend(token_ids(seq, what))
            offsets.append(len(self.ids))
        self.offsets = offsets
        self.struct = _lib.TokenLists()
        self.struct.num_ids = len(self.ids)
        if len(self.ids):
            self.struct.ids = (c_int32 * len(self.ids)).from_buffer(self.ids)
        self.struct.offsets = (c_int64 * len(offsets)).from_buffer(offsets)


def _items(batch, kind):
    batch = _as_list(batch)
    if isinstance(batch, dict):
        raise InvalidArgumentError("batch must be a list of %s dicts, got one dict (wrap it in a list)" % kind)
    try:
        items = list(batch)
    except TypeError:
        raise InvalidArgumentError("batch must be a list of %s dicts, got %r" % (kind, type(batch).__name__)) from None
    if not items:
        raise InvalidArgumentError("batch is empty")
    for i, item in enumerate(items):
        if not hasattr(item, "__getitem__") or not hasattr(item, "keys"):
            raise InvalidArgumentError("batch[%d] must be a dict, got %r" % (i, type(item).__name__))
    return items


def _field(item, key, i, label):
    try:
        return item[key]
    except KeyError:
        raise InvalidArgumentError("%s %d has no '%s'" % (label, i, key)) from None


class Preference:
    """A dpo_preference_batch from [{"prompt_ids", "chosen_ids", "rejected_ids"[, "ref_chosen_logps",
    "ref_rejected_logps"]}, ...]."""

    def __init__(self, batch, with_reference=True):
        items = _items(batch, "{prompt_ids, chosen_ids, rejected_ids}")
        self.parts = {}
        self.struct = _lib.new(_lib.PreferenceBatch)
        self.struct.num_pairs = len(items)
        for key, field in (("prompt_ids", "prompts"), ("chosen_ids", "chosen"), ("rejected_ids", "rejected")):
            lists = Lists([_field(it, key, i, "pair") for i, it in enumerate(items)],
                          ["pair %d: %s" % (i, key) for i in range(len(items))])
            self.parts[key] = lists
            setattr(self.struct, field, lists.struct)
        carried = [i for i, it in enumerate(items) if "ref_chosen_logps" in it or "ref_rejected_logps" in it]
        if with_reference and carried:
            if len(carried) != len(items):
                raise InvalidArgumentError("%d of %d pairs carry ref_chosen_logps/ref_rejected_logps: give them for all "
                                           "pairs or none" % (len(carried), len(items)))
            for key, field in (("ref_chosen_logps", "ref_chosen_logps"), ("ref_rejected_logps", "ref_rejected_logps")):
                values = []
                for i, it in enumerate(items):
                    v = _as_list(_field(it, key, i, "pair"))
                    try:
                        values.append(float(v))
                    except (TypeError, ValueError):
                        raise InvalidArgumentError("pair %d: %s = %r is not a number" % (i, key, v)) from None
                buf = (c_double * len(values))(*values)
                self.parts[key] = buf
                setattr(self.struct, field, ctypes.cast(buf, POINTER(c_double)))

    @property
    def count(self):
        return self.struct.num_pairs


class Completion:
    """A dpo_completion_batch from [{"prompt_ids", "completion_ids"}, ...]."""

    def __init__(self, batch):
        items = _items(batch, "{prompt_ids, completion_ids}")
        self.struct = _lib.new(_lib.CompletionBatch)
        self.struct.count = len(items)
        self.prompts = Lists([_field(it, "prompt_ids", i, "item") for i, it in enumerate(items)],
                             ["item %d: prompt_ids" % i for i in range(len(items))])
        self.completions = Lists([_field(it, "completion_ids", i, "item") for i, it in enumerate(items)],
                                 ["item %d: completion_ids" % i for i in range(len(items))])
        self.struct.prompts = self.prompts.struct
        self.struct.completions = self.completions.struct

    @property
    def count(self):
        return self.struct.count
