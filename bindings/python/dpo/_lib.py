"""Loading libdpo.so and the ctypes mirror of include/dpo.h.

Search order: $DPO_LIBRARY; the repository build (``.build/release/libdpo.so`` two levels above
this package's directory, as ``make build`` leaves it); ``libdpo.so`` inside the package (pip
installs bundle it there); then the system's library path.
"""
import ctypes
import ctypes.util
import os
from ctypes import POINTER, Structure, c_char, c_char_p, c_double, c_float, c_int32, c_int64, c_size_t, c_uint64, c_void_p

from .errors import DPOError, error_for

ABI_VERSION = 1

_here = os.path.dirname(os.path.abspath(__file__))


def _candidates():
    env = os.environ.get("DPO_LIBRARY")
    if env:
        return [env]
    repo = os.path.normpath(os.path.join(_here, "..", "..", ".."))
    found = ctypes.util.find_library("dpo")
    return [os.path.join(repo, ".build", "release", "libdpo.so"), os.path.join(_here, "libdpo.so")] + \
        ([found] if found else []) + ["libdpo.so"]


def _load():
    tried = []
    for path in _candidates():
        if os.sep in path and not os.path.exists(path):
            tried.append(path + " (missing)")
            continue
        try:
            return ctypes.CDLL(path), path
        except OSError as e:
            tried.append("%s (%s)" % (path, e))
    raise ImportError("dpo: cannot load libdpo.so; run `make build` in the swift-dpo repository or set "
                      "DPO_LIBRARY to its path. Tried: " + "; ".join(tried))


lib, path = _load()


# --- structs (same layout as include/dpo.h) ---------------------------------------------------

class TokenLists(Structure):
    _fields_ = [("ids", POINTER(c_int32)), ("num_ids", c_int64), ("offsets", POINTER(c_int64))]


class CompletionBatch(Structure):
    _fields_ = [("struct_size", c_size_t), ("count", c_int64), ("prompts", TokenLists), ("completions", TokenLists)]


class PreferenceBatch(Structure):
    _fields_ = [("struct_size", c_size_t), ("num_pairs", c_int64), ("prompts", TokenLists),
                ("chosen", TokenLists), ("rejected", TokenLists),
                ("ref_chosen_logps", POINTER(c_double)), ("ref_rejected_logps", POINTER(c_double))]


class GenerateParams(Structure):
    _fields_ = [("struct_size", c_size_t), ("max_new_tokens", c_int64), ("temperature", c_double),
                ("top_k", c_int64), ("top_p", c_double), ("seed", c_uint64),
                ("num_eos_token_ids", c_int64), ("eos_token_ids", POINTER(c_int32))]


_METRIC_FIELDS = ["loss", "rewards_chosen", "rewards_rejected", "rewards_accuracies", "rewards_margins",
                  "logps_chosen", "logps_rejected", "logits_chosen", "logits_rejected", "entropy",
                  "mean_token_accuracy", "grad_norm", "learning_rate", "num_tokens"]


class Metrics(Structure):
    _fields_ = [("struct_size", c_size_t)] + [(f, c_double) for f in _METRIC_FIELDS] + \
        [("optimizer_stepped", c_int32), ("reserved", c_int32), ("global_step", c_int64)]


class SFTMetrics(Structure):
    _fields_ = [("struct_size", c_size_t)] + \
        [(f, c_double) for f in ["loss", "mean_token_accuracy", "entropy", "grad_norm", "learning_rate", "num_tokens"]] + \
        [("optimizer_stepped", c_int32), ("reserved", c_int32), ("global_step", c_int64)]


class TokenizerInfo(Structure):
    _fields_ = [("struct_size", c_size_t), ("vocab_size", c_int64), ("bos_token_id", c_int64),
                ("eos_token_id", c_int64), ("pad_token_id", c_int64), ("has_chat_template", c_int32),
                ("reserved", c_int32)]


class ChatMessage(Structure):
    _fields_ = [("role", c_char_p), ("content", c_char_p)]


class DatasetInfo(Structure):
    _fields_ = [("struct_size", c_size_t), ("rows", c_int64), ("kept", c_int64), ("dropped", c_int64),
                ("truncated", c_int64), ("format", c_char_p)]


# int32_t (*dpo_loop_callback)(void *user_data, int32_t event, const char *json)
LoopCallback = ctypes.CFUNCTYPE(c_int32, c_void_p, c_int32, c_char_p)


class LoopParams(Structure):
    _fields_ = [("struct_size", c_size_t), ("args_json", c_char_p), ("train_dataset", c_void_p),
                ("eval_dataset", c_void_p), ("callback", LoopCallback), ("user_data", c_void_p)]


EVENT_TRAIN_BEGIN, EVENT_STEP_END, EVENT_LOG, EVENT_SAVE = 0, 1, 2, 3


def new(struct_type):
    """A zeroed struct with struct_size set."""
    s = struct_type()
    s.struct_size = ctypes.sizeof(struct_type)
    return s


# --- prototypes -------------------------------------------------------------------------------

_h = c_void_p
_ph = POINTER(c_void_p)
_status = c_int32
_PROTOTYPES = {
    "dpo_version": (c_char_p, []),
    "dpo_abi_version": (c_int32, []),
    "dpo_status_string": (c_char_p, [c_int32]),
    "dpo_last_error": (c_char_p, []),
    "dpo_get_num_threads": (c_int32, []),
    "dpo_set_num_threads": (_status, [c_int32]),
    "dpo_model_create_json": (_status, [c_char_p, c_uint64, _ph]),
    "dpo_model_load": (_status, [c_char_p, _ph]),
    "dpo_model_load_quantized": (_status, [c_char_p, _ph]),
    "dpo_model_is_quantized": (_status, [_h, POINTER(c_int32), POINTER(c_int64)]),
    "dpo_model_dequantize": (_status, [_h, _ph]),
    "dpo_model_save": (_status, [_h, c_char_p]),
    "dpo_model_save_gguf": (_status, [_h, c_char_p, c_char_p, _h]),
    "dpo_model_free": (_status, [_h]),
    "dpo_model_last_error": (c_char_p, [_h]),
    "dpo_model_config_json": (_status, [_h, POINTER(c_char), c_size_t, POINTER(c_size_t)]),
    "dpo_model_num_parameters": (_status, [_h, POINTER(c_int64)]),
    "dpo_model_sequence_logps": (_status, [_h, POINTER(CompletionBatch), POINTER(c_double), c_int64]),
    "dpo_model_add_adapter_json": (_status, [_h, c_char_p, c_uint64]),
    "dpo_model_load_adapter": (_status, [_h, c_char_p]),
    "dpo_model_merge_and_unload": (_status, [_h]),
    "dpo_model_unload": (_status, [_h]),
    "dpo_model_adapter_num_parameters": (_status, [_h, POINTER(c_int64)]),
    "dpo_model_adapter_config_json": (_status, [_h, POINTER(c_char), c_size_t, POINTER(c_size_t)]),
    "dpo_trainer_create_peft_json": (_status, [_h, _h, c_char_p, c_char_p, _ph]),
    "dpo_sft_trainer_create_peft_json": (_status, [_h, c_char_p, c_char_p, _ph]),
    "dpo_generate_default_params": (_status, [POINTER(GenerateParams)]),
    "dpo_model_generate": (_status, [_h, POINTER(GenerateParams), c_int64, POINTER(TokenLists),
                                     POINTER(c_int32), c_int64, POINTER(c_int64), POINTER(c_int64)]),
    "dpo_tokenizer_load": (_status, [c_char_p, _ph]),
    "dpo_tokenizer_free": (_status, [_h]),
    "dpo_tokenizer_save_pretrained": (_status, [_h, c_char_p]),
    "dpo_tokenizer_last_error": (c_char_p, [_h]),
    "dpo_tokenizer_get_info": (_status, [_h, POINTER(TokenizerInfo)]),
    "dpo_tokenizer_encode": (_status, [_h, c_char_p, c_size_t, c_int32, POINTER(c_int32), c_int64, POINTER(c_int64)]),
    "dpo_tokenizer_decode": (_status, [_h, POINTER(c_int32), c_int64, c_int32, POINTER(c_char), c_size_t,
                                       POINTER(c_size_t)]),
    "dpo_tokenizer_chat_template": (_status, [_h, POINTER(c_char), c_size_t, POINTER(c_size_t)]),
    "dpo_tokenizer_apply_chat_template": (_status, [_h, POINTER(ChatMessage), c_int64, c_int32, POINTER(c_char),
                                                    c_size_t, POINTER(c_size_t)]),
    "dpo_trainer_config_json": (_status, [c_char_p, POINTER(c_char), c_size_t, POINTER(c_size_t)]),
    "dpo_trainer_create_json": (_status, [_h, _h, c_char_p, _ph]),
    "dpo_trainer_free": (_status, [_h]),
    "dpo_trainer_last_error": (c_char_p, [_h]),
    "dpo_trainer_step": (_status, [_h, POINTER(PreferenceBatch), POINTER(Metrics)]),
    "dpo_trainer_evaluate": (_status, [_h, POINTER(PreferenceBatch), POINTER(Metrics)]),
    "dpo_trainer_precompute_ref_logps": (_status, [_h, POINTER(PreferenceBatch), POINTER(c_double), POINTER(c_double), c_int64]),
    "dpo_trainer_accumulate": (_status, [_h, POINTER(PreferenceBatch), POINTER(Metrics)]),
    "dpo_trainer_gradients": (_status, [_h, POINTER(POINTER(c_float)), POINTER(c_int64)]),
    "dpo_trainer_apply_optimizer": (_status, [_h, POINTER(Metrics)]),
    "dpo_trainer_global_step": (_status, [_h, POINTER(c_int64)]),
    "dpo_trainer_save_checkpoint": (_status, [_h, c_char_p]),
    "dpo_trainer_load_checkpoint": (_status, [_h, c_char_p]),
    "dpo_sft_trainer_config_json": (_status, [c_char_p, POINTER(c_char), c_size_t, POINTER(c_size_t)]),
    "dpo_sft_trainer_create_json": (_status, [_h, c_char_p, _ph]),
    "dpo_sft_trainer_free": (_status, [_h]),
    "dpo_sft_trainer_last_error": (c_char_p, [_h]),
    "dpo_sft_trainer_step": (_status, [_h, POINTER(CompletionBatch), POINTER(SFTMetrics)]),
    "dpo_sft_trainer_evaluate": (_status, [_h, POINTER(CompletionBatch), POINTER(SFTMetrics)]),
    "dpo_sft_trainer_accumulate": (_status, [_h, POINTER(CompletionBatch), POINTER(SFTMetrics)]),
    "dpo_sft_trainer_gradients": (_status, [_h, POINTER(POINTER(c_float)), POINTER(c_int64)]),
    "dpo_sft_trainer_apply_optimizer": (_status, [_h, POINTER(SFTMetrics)]),
    "dpo_sft_trainer_global_step": (_status, [_h, POINTER(c_int64)]),
    "dpo_sft_trainer_save_checkpoint": (_status, [_h, c_char_p]),
    "dpo_sft_trainer_load_checkpoint": (_status, [_h, c_char_p]),
    "dpo_trainer_dataset_create": (_status, [_h, _h, _ph]),
    "dpo_sft_trainer_dataset_create": (_status, [_h, _h, _ph]),
    "dpo_dataset_add_rows": (_status, [_h, c_char_p, c_size_t]),
    "dpo_dataset_add_file": (_status, [_h, c_char_p]),
    "dpo_dataset_get_info": (_status, [_h, POINTER(DatasetInfo)]),
    "dpo_dataset_row_json": (_status, [_h, c_int64, POINTER(c_char), c_size_t, POINTER(c_size_t)]),
    "dpo_dataset_free": (_status, [_h]),
    "dpo_dataset_last_error": (c_char_p, [_h]),
    "dpo_trainer_loop_create": (_status, [_h, POINTER(LoopParams), _ph]),
    "dpo_sft_trainer_loop_create": (_status, [_h, POINTER(LoopParams), _ph]),
    "dpo_loop_train": (_status, [_h, c_char_p, POINTER(c_char_p)]),
    "dpo_loop_evaluate": (_status, [_h, _h, POINTER(c_char_p)]),
    "dpo_loop_log": (_status, [_h, c_char_p]),
    "dpo_loop_state": (_status, [_h, POINTER(c_char_p)]),
    "dpo_loop_save_model": (_status, [_h, c_char_p]),
    "dpo_loop_save_checkpoint": (_status, [_h, POINTER(c_char_p)]),
    "dpo_loop_free": (_status, [_h]),
    "dpo_loop_last_error": (c_char_p, [_h]),
}
for _name, (_restype, _argtypes) in _PROTOTYPES.items():
    _f = getattr(lib, _name)
    _f.restype = _restype
    _f.argtypes = _argtypes

if lib.dpo_abi_version() != ABI_VERSION:
    raise ImportError("dpo: %s has ABI version %d, these bindings need %d; rebuild the library or the bindings"
                      % (path, lib.dpo_abi_version(), ABI_VERSION))


# --- calling ----------------------------------------------------------------------------------

def check(status):
    """Raises the DPOError subclass of a failed status with the thread's last message."""
    if status != 0:
        message = lib.dpo_last_error().decode("utf-8", "replace")
        raise error_for(status, message or lib.dpo_status_string(status).decode())


def encode_path(p):
    """A str, bytes or os.PathLike path as the bytes the library takes, as open() takes paths:
    bytes pass through unchanged, str is encoded with the file system encoding (so a name that
    os.listdir() decoded with surrogate escapes gets its original bytes back). libdpo uses the
    bytes as given, UTF-8 or not. A NUL byte raises ValueError, as Python's own file functions do:
    the library reads C strings, so "a\\x00/../x" would silently name "a"."""
    encoded = os.fsencode(p)  # TypeError for anything but str, bytes and os.PathLike
    if b"\x00" in encoded:
        raise ValueError("embedded null byte in path %r" % (p,))
    return encoded


def text_out(function, *args):
    """Calls a (..., buffer, capacity, out_needed) function, growing the buffer as needed."""
    needed = c_size_t(0)
    status = function(*args, None, 0, ctypes.byref(needed))
    if status not in (0, 8):
        check(status)
    while True:
        buf = ctypes.create_string_buffer(needed.value)
        status = function(*args, buf, needed.value, ctypes.byref(needed))
        if status != 8:
            check(status)
            return buf.value.decode("utf-8")


def version():
    return lib.dpo_version().decode()


__all__ = ["lib", "path", "check", "DPOError"]
