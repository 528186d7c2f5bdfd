"""dpo.Model: a Llama-family model (Hugging Face names) held by libdpo."""
import ctypes
import gc
import json
import math
import os
import weakref
from ctypes import c_double, c_int32, c_int64, c_void_p

from . import _batch, _lib
from .errors import InvalidArgumentError


class Handle:
    """Owns one library handle; frees it once (close, context exit or garbage collection). After
    close the stale handle is still passed to the library, which refuses it with a clear error.

    Views of library memory it hands out (trainer.gradients()) are registered with _export(): each
    keeps this object alive, and close() refuses while any of them is still alive (as mmap.close()
    does with exported buffers), so no view can outlive the memory it shows."""

    _free = None  # the library's free function for this handle type

    def __init__(self, handle):
        self._handle = c_void_p(handle)
        self._closed = False
        self._exports = []  # weak references to the ctypes arrays behind handed-out views

    def _export(self, array):
        """A memoryview of `array` (a ctypes array over this handle's memory) that keeps this
        handle alive and blocks close() while it, or anything made from it, exists."""
        array._owner = self
        self._exports = [r for r in self._exports if r() is not None] + [weakref.ref(array)]
        return memoryview(array).cast("B").cast(array._type_._type_)

    def _live_exports(self):
        return sum(1 for r in self._exports if r() is not None)

    def close(self):
        """Frees the handle. Raises BufferError (and changes nothing) while views it handed out are
        alive: release them first (del, view.release(), or `with trainer.gradients() as g:`)."""
        if self._closed:
            return
        if self._live_exports():
            gc.collect()  # views only kept by garbage reference cycles
        live = self._live_exports()
        if live:
            raise BufferError("cannot close %s: %d gradient view%s of its memory still exist%s (memoryviews, "
                              "slices or numpy arrays of gradients()); release them first"
                              % (type(self).__name__, live, "" if live == 1 else "s", "s" if live == 1 else ""))
        _lib.check(type(self)._free(self._handle))  # on failure (in use by another thread) still open
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        # Unreachable, so no live view refers to it (each keeps its owner alive); the check guards
        # against garbage cycles whose finalizers might still run.
        try:
            if not self._closed and not self._live_exports() and _lib is not None and _lib.lib is not None:
                self._closed = True
                type(self)._free(self._handle)
        except Exception:
            pass


class Model(Handle):
    """A Llama-family decoder (model_type "llama" or "qwen2") with fp32 weights."""

    _free = _lib.lib.dpo_model_free

    @classmethod
    def from_pretrained(cls, path, keep_base_quantized=False):
        """Loads a Hugging Face model directory (config.json + model.safetensors) or a GGUF file
        (llama / qwen2; F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K..Q6_K dequantized to fp32
        exactly as ggml does). Local files only.

        keep_base_quantized=True (GGUF only): the matrices stay in their quantized GGUF form and
        are dequantized tile by tile inside the products (SmolLM2-135M Q4_1: 96 MB of weights
        instead of 538 MB). Such a model computes log-probs, generates and trains a LoRA adapter
        (a trainer with peft_config=); full fine-tuning, merge_and_unload and saving the base are
        refused: dequantized() makes the fp32 model for those."""
        if not isinstance(keep_base_quantized, bool):
            raise InvalidArgumentError("keep_base_quantized must be True or False, got %r" % (keep_base_quantized,))
        load = _lib.lib.dpo_model_load_quantized if keep_base_quantized else _lib.lib.dpo_model_load
        out = c_void_p()
        _lib.check(load(_lib.encode_path(path), ctypes.byref(out)))
        model = cls(out.value)
        model._source = path  # where a trainer finds the model's own tokenizer
        return model

    @property
    def is_quantized(self):
        """True if the model keeps its GGUF base quantized (from_pretrained(keep_base_quantized=True))."""
        flag, _ = self._quantized()
        return flag

    @property
    def quantized_bytes(self):
        """Bytes of the quantized matrices of a base kept quantized (0 otherwise)."""
        _, size = self._quantized()
        return size

    def _quantized(self):
        flag, size = c_int32(), c_int64()
        _lib.check(_lib.lib.dpo_model_is_quantized(self._handle, ctypes.byref(flag), ctypes.byref(size)))
        return bool(flag.value), size.value

    def dequantized(self):
        """A new fp32 Model equal to this one (quantized matrices dequantized exactly as
        from_pretrained reads them, with a copy of the adapter, if any); this model is unchanged.
        On it merge_and_unload() and save_pretrained() of the merged model work."""
        out = c_void_p()
        _lib.check(_lib.lib.dpo_model_dequantize(self._handle, ctypes.byref(out)))
        model = type(self)(out.value)
        model._source = getattr(self, "_source", None)
        return model

    @classmethod
    def from_config(cls, config, seed=0):
        """A randomly initialised model from a config dict with Hugging Face names (absent fields take
        transformers' LlamaConfig defaults), deterministic for a seed."""
        if not isinstance(config, dict):
            raise InvalidArgumentError("config must be a dict of Hugging Face config.json fields, got %r"
                                       % type(config).__name__)
        if not isinstance(seed, int) or not 0 <= seed < 2**64:
            raise InvalidArgumentError("seed must be an integer in [0, 2^64), got %r" % (seed,))
        out = c_void_p()
        text = _json_fields(config)
        _lib.check(_lib.lib.dpo_model_create_json(text, seed, ctypes.byref(out)))
        return cls(out.value)

    def save_pretrained(self, path, format=None, dtype="f32", tokenizer=None):
        """Writes the model. format "safetensors": config.json and model.safetensors (F32) into the
        directory path (created if needed), and for a model loaded from a GGUF file its tokenizer
        (tokenizer.json, tokenizer_config.json, special_tokens_map.json); a model with a LoRA adapter writes the adapter files
        instead (adapter_config.json + adapter_model.safetensors, as PEFT's save_pretrained). format "gguf": one GGUF file at path (llama.cpp /
        Ollama), dtype "f32", "f16", "bf16" or "q8_0", with the tokenizer's metadata (tokenizer: a
        dpo.Tokenizer; default: the tokenizer of the GGUF the model was loaded from). format None:
        "gguf" if path ends with ".gguf", else "safetensors"."""
        encoded = _lib.encode_path(path)
        if format is None:
            format = "gguf" if encoded.lower().endswith(b".gguf") else "safetensors"
        if format == "safetensors":
            if dtype != "f32" or tokenizer is not None:
                raise InvalidArgumentError("format 'safetensors' writes F32 weights (and the tokenizer of the GGUF the model "
                                           "came from); dtype and tokenizer apply to format 'gguf'")
            _lib.check(_lib.lib.dpo_model_save(self._handle, encoded))
        elif format == "gguf":
            if dtype not in ("f32", "f16", "bf16", "q8_0"):
                raise InvalidArgumentError("dtype must be one of 'f32', 'f16', 'bf16', 'q8_0', got %r" % (dtype,))
            handle = None
            if tokenizer is not None:
                from .tokenizer import Tokenizer
                if not isinstance(tokenizer, Tokenizer):
                    raise InvalidArgumentError("tokenizer must be a dpo.Tokenizer, got %s" % type(tokenizer).__name__)
                handle = tokenizer._handle
            _lib.check(_lib.lib.dpo_model_save_gguf(self._handle, encoded, dtype.encode(), handle))
        else:
            raise InvalidArgumentError("format must be 'safetensors' or 'gguf', got %r" % (format,))

    # --- LoRA adapters (PEFT) ---------------------------------------------------------------

    def add_adapter(self, peft_config, seed=0):
        """Attaches a fresh LoRA adapter (transformers' add_adapter / PEFT's get_peft_model) from a
        dpo.LoraConfig; the base weights are frozen from now on. Returns self."""
        from .lora import LoraConfig
        if not isinstance(peft_config, LoraConfig):
            raise InvalidArgumentError("peft_config must be a dpo.LoraConfig, got %r" % type(peft_config).__name__)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**53:
            raise InvalidArgumentError("seed must be an integer in [0, 2^53), got %r" % (seed,))
        _lib.check(_lib.lib.dpo_model_add_adapter_json(self._handle, peft_config._json(), seed))
        return self

    def load_adapter(self, path):
        """Loads a PEFT adapter directory (adapter_config.json + adapter_model.safetensors) onto the
        model (transformers' load_adapter). A DPOTrainer made afterwards without ref_model trains it
        against a frozen copy of it (TRL's "ref" adapter). Returns self."""
        _lib.check(_lib.lib.dpo_model_load_adapter(self._handle, _lib.encode_path(path)))
        return self

    def merge_and_unload(self):
        """PEFT's merge_and_unload: W += scaling * B A, the adapter removed. Returns self (a plain
        model: save_pretrained then writes the merged weights)."""
        _lib.check(_lib.lib.dpo_model_merge_and_unload(self._handle))
        return self

    def unload(self):
        """PEFT's unload(): the adapter removed without merging (the model computes its base
        again). Returns self."""
        _lib.check(_lib.lib.dpo_model_unload(self._handle))
        return self

    @property
    def peft_config(self):
        """The adapter's adapter_config.json fields (a dict), or None without an adapter."""
        if self.num_adapter_parameters() == 0:
            return None
        return json.loads(_lib.text_out(_lib.lib.dpo_model_adapter_config_json, self._handle))

    def num_adapter_parameters(self):
        """Entries of the adapter's A and B matrices (0 without an adapter)."""
        out = c_int64()
        _lib.check(_lib.lib.dpo_model_adapter_num_parameters(self._handle, ctypes.byref(out)))
        return out.value

    @property
    def config(self):
        """The config as a dict with Hugging Face names (as config.json)."""
        return json.loads(_lib.text_out(_lib.lib.dpo_model_config_json, self._handle))

    def num_parameters(self):
        out = c_int64()
        _lib.check(_lib.lib.dpo_model_num_parameters(self._handle, ctypes.byref(out)))
        return out.value

    def sequence_logps(self, batch):
        """Summed completion log-probs, one float per {"prompt_ids", "completion_ids"} item."""
        b = _batch.Completion(batch)
        out = (c_double * b.count)()
        _lib.check(_lib.lib.dpo_model_sequence_logps(self._handle, ctypes.byref(b.struct), out, b.count))
        return list(out)

    def generate(self, prompt_ids, max_new_tokens=32, temperature=0.0, top_k=0, top_p=1.0, seed=0,
                 eos_token_id=None):
        """Continues one prompt (a list of ids -> a list of new ids) or several (a list of lists ->
        a list of lists). Greedy when temperature is 0. eos_token_id: None = the config's, an int or a
        list of ints; [] never stops early. Returns only the new tokens (an EOS that stopped a
        sequence included)."""
        prompts = _batch._as_list(prompt_ids)
        if isinstance(prompts, (str, bytes)) or not hasattr(prompts, "__iter__"):
            raise InvalidArgumentError("prompt_ids must be a list of token ids or a list of lists, got %r"
                                       % type(prompt_ids).__name__)
        prompts = list(prompts)
        single = not prompts or not hasattr(_batch._as_list(prompts[0]), "__iter__")
        if single:
            prompts = [prompts]
        params = _lib.new(_lib.GenerateParams)
        _lib.check(_lib.lib.dpo_generate_default_params(ctypes.byref(params)))
        for name, value in (("max_new_tokens", max_new_tokens), ("top_k", top_k), ("seed", seed)):
            if isinstance(value, bool) or not isinstance(_batch._as_list(value), int):
                raise InvalidArgumentError("%s must be an integer, got %r" % (name, value))
        if not 0 <= seed < 2**64:
            raise InvalidArgumentError("seed must be in [0, 2^64), got %d" % seed)
        if not -2**63 <= max_new_tokens < 2**63 or not -2**63 <= top_k < 2**63:
            raise InvalidArgumentError("max_new_tokens = %d, top_k = %d: out of range" % (max_new_tokens, top_k))
        params.max_new_tokens = max_new_tokens
        params.top_k = top_k
        params.seed = seed
        try:
            params.temperature = float(temperature)
            params.top_p = float(top_p)
        except (TypeError, ValueError):
            raise InvalidArgumentError("temperature and top_p must be numbers, got %r and %r"
                                       % (temperature, top_p)) from None
        eos = None
        if eos_token_id is not None:
            ids = [eos_token_id] if isinstance(_batch._as_list(eos_token_id), int) else eos_token_id
            eos = _batch.token_ids(ids, "eos_token_id")
            params.num_eos_token_ids = len(eos)
            if len(eos):
                params.eos_token_ids = (c_int32 * len(eos)).from_buffer(eos)
        lists = _batch.Lists(prompts, ["prompt %d" % i for i in range(len(prompts))])
        n = len(prompts)
        # Room for up to 4096 new tokens per prompt up front (the library checks the request fits in
        # memory before generating); a longer result is regenerated into a buffer of the size needed
        # (decoding is deterministic for a seed).
        capacity = max(n * min(max(max_new_tokens, 0), 4096), 1)
        out_offsets = (c_int64 * (n + 1))()
        needed = c_int64()
        while True:
            out_ids = (c_int32 * capacity)()
            status = _lib.lib.dpo_model_generate(self._handle, ctypes.byref(params), n, ctypes.byref(lists.struct),
                                                 out_ids, capacity, out_offsets, ctypes.byref(needed))
            if status != 8 or needed.value <= capacity:
                _lib.check(status)
                break
            capacity = needed.value
        out = [list(out_ids[out_offsets[i]:out_offsets[i + 1]]) for i in range(n)]
        return out[0] if single else out

    def __repr__(self):
        try:
            c = self.config
            return "Model(%s, %d layers, hidden %d, vocab %d)" % (c.get("model_type"), c.get("num_hidden_layers"),
                                                                c.get("hidden_size"), c.get("vocab_size"))
        except Exception:
            return "Model(closed)"


def _json_fields(fields):
    """A dict of config fields as the JSON bytes the library reads. JSON has no NaN or infinity, so
    a non-finite number is a ValueError naming its field (not a JSON error from the library)."""
    for key, value in fields.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError("%s = %r is not a finite number" % (key, value))
            # The library reads JSON numbers as doubles: an integer in (2^53, 2^64] (a seed) would
            # change silently; larger ones are out of every range, which the library says.
            if isinstance(v, int) and not isinstance(v, bool) and 2**53 < abs(v) <= 2**64:
                raise InvalidArgumentError("%s = %r is beyond 2^53, which a JSON number does not hold exactly"
                                           % (key, value))
    return json.dumps(fields, default=_jsonable).encode()


def _jsonable(x):
    """numpy scalars and arrays, and paths (os.PathLike), in JSON payloads."""
    if hasattr(x, "tolist"):
        return x.tolist()
    if isinstance(x, os.PathLike):
        return os.fsdecode(x)
    raise TypeError("%r is not JSON serializable" % (x,))
