"""dpo.Tokenizer: a model's own tokenizer and chat template, held by libdpo (transformers' names)."""
import ctypes
import numbers
from ctypes import c_int32, c_int64, c_size_t, c_void_p

from . import _lib
from .errors import InvalidArgumentError
from .model import Handle

_MAX_IDS = 2**31 - 1


def _text_bytes(text, name):
    if not isinstance(text, str):
        raise InvalidArgumentError("%s must be a str, got %s" % (name, type(text).__name__))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as e:  # lone surrogates cannot be UTF-8
        raise InvalidArgumentError("%s is not encodable as UTF-8 (%s)" % (name, e.reason))


def _flag(value, name):
    if not isinstance(value, bool):
        raise InvalidArgumentError("%s must be True or False, got %r" % (name, value))
    return 1 if value else 0


def _text_out_raw(function, *args):
    """Like _lib.text_out, but keeps NUL characters inside the text (decode of a U+0000 token)."""
    needed = c_size_t(0)
    status = function(*args, None, 0, ctypes.byref(needed))
    if status not in (0, 8):
        _lib.check(status)
    while True:
        buf = ctypes.create_string_buffer(needed.value)
        status = function(*args, buf, needed.value, ctypes.byref(needed))
        if status != 8:
            _lib.check(status)
            return buf.raw[:needed.value - 1].decode("utf-8")


class Tokenizer(Handle):
    """A tokenizer loaded from a model directory (tokenizer.json, tokenizer_config.json) or a .gguf
    file: byte-level BPE (GPT-2, SmolLM2, Llama 3, Qwen2) or SentencePiece-style BPE (Llama 2,
    TinyLlama, Mistral). encode/decode/apply_chat_template give what transformers' tokenizer gives.

        tok = dpo.Tokenizer.from_pretrained("SmolLM2-135M-Instruct.Q4_1.gguf")
        ids = tok.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True)
    """

    _free = _lib.lib.dpo_tokenizer_free

    @classmethod
    def from_pretrained(cls, path):
        """Loads the tokenizer of a model directory or of a .gguf file (local files only)."""
        out = c_void_p()
        _lib.check(_lib.lib.dpo_tokenizer_load(_lib.encode_path(path), ctypes.byref(out)))
        return cls(out.value)

    def save_pretrained(self, save_directory):
        """Writes tokenizer.json, tokenizer_config.json and special_tokens_map.json into
        save_directory (created if needed), which this package and transformers' AutoTokenizer
        read back as this tokenizer."""
        _lib.check(_lib.lib.dpo_tokenizer_save_pretrained(self._handle, _lib.encode_path(save_directory)))

    def _info(self):
        info = _lib.new(_lib.TokenizerInfo)
        _lib.check(_lib.lib.dpo_tokenizer_get_info(self._handle, ctypes.byref(info)))
        return info

    @property
    def vocab_size(self):
        """One more than the largest token id (every id is below it); transformers' len(tokenizer)
        unless the ids have gaps."""
        return self._info().vocab_size

    def __len__(self):
        return self._info().vocab_size

    @property
    def bos_token_id(self):
        v = self._info().bos_token_id
        return None if v < 0 else v

    @property
    def eos_token_id(self):
        v = self._info().eos_token_id
        return None if v < 0 else v

    @property
    def pad_token_id(self):
        v = self._info().pad_token_id
        return None if v < 0 else v

    @property
    def bos_token(self):
        i = self.bos_token_id
        return None if i is None else self.decode([i])

    @property
    def eos_token(self):
        i = self.eos_token_id
        return None if i is None else self.decode([i])

    @property
    def pad_token(self):
        i = self.pad_token_id
        return None if i is None else self.decode([i])

    @property
    def chat_template(self):
        """The chat template's Jinja text, or None if the tokenizer has none."""
        if not self._info().has_chat_template:
            return None
        return _text_out_raw(_lib.lib.dpo_tokenizer_chat_template, self._handle)

    def encode(self, text, add_special_tokens=True):
        """Token ids of text (a list of ints), as transformers' tokenizer.encode."""
        data = _text_bytes(text, "text")
        flag = _flag(add_special_tokens, "add_special_tokens")
        capacity = len(data) + 8
        while True:
            out = (c_int32 * capacity)()
            count = c_int64(0)
            status = _lib.lib.dpo_tokenizer_encode(self._handle, data, len(data), flag, out, capacity,
                                                   ctypes.byref(count))
            if status != 8:
                _lib.check(status)
                return list(out[:count.value])
            capacity = count.value

    def __call__(self, text, add_special_tokens=True):
        """{"input_ids": [...], "attention_mask": [...]} for a str; lists of lists for a list of str."""
        if isinstance(text, (list, tuple)):
            ids = [self.encode(t, add_special_tokens=add_special_tokens) for t in text]
            return {"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids]}
        ids = self.encode(text, add_special_tokens=add_special_tokens)
        return {"input_ids": ids, "attention_mask": [1] * len(ids)}

    def decode(self, ids, skip_special_tokens=False):
        """The text of a list of token ids, as transformers' tokenizer.decode."""
        if isinstance(ids, numbers.Integral) and not isinstance(ids, bool):  # one id: int, numpy integer
            ids = [ids]
        try:
            values = list(ids)
        except TypeError:
            raise InvalidArgumentError("ids must be a list of token ids, got %s" % type(ids).__name__)
        for i, v in enumerate(values):  # ints and numpy integers
            if isinstance(v, bool) or not hasattr(v, "__index__"):
                raise InvalidArgumentError("ids[%d] must be an int, got %r" % (i, v))
            values[i] = v.__index__()
            if not 0 <= values[i] <= _MAX_IDS:
                raise InvalidArgumentError("ids[%d] = %d is not a token id" % (i, values[i]))
        arr = (c_int32 * max(len(values), 1))(*values)
        flag = _flag(skip_special_tokens, "skip_special_tokens")
        return _text_out_raw(_lib.lib.dpo_tokenizer_decode, self._handle, arr, len(values), flag)

    def apply_chat_template(self, conversation, add_generation_prompt=False, tokenize=True):
        """Renders the chat template over messages ({"role", "content"} dicts) as transformers does:
        the prompt text with tokenize=False, its token ids (encoded without adding special tokens,
        the template has them) with tokenize=True."""
        if isinstance(conversation, (str, bytes)) or not hasattr(conversation, "__iter__"):
            raise InvalidArgumentError("conversation must be a list of {'role', 'content'} dicts")
        keep = []  # the encoded strings stay alive during the call
        messages = list(conversation)
        array = (_lib.ChatMessage * max(len(messages), 1))()
        for i, m in enumerate(messages):
            if not hasattr(m, "get") or "role" not in m or "content" not in m:
                raise InvalidArgumentError("conversation[%d] must be a dict with 'role' and 'content', got %r" % (i, m))
            role = _text_bytes(m["role"], "conversation[%d]['role']" % i)
            content = _text_bytes(m["content"], "conversation[%d]['content']" % i)
            for name, b in (("role", role), ("content", content)):
                if b"\x00" in b:
                    raise InvalidArgumentError("conversation[%d]['%s'] contains a NUL character" % (i, name))
            keep += [role, content]
            array[i].role = role
            array[i].content = content
        flag = _flag(add_generation_prompt, "add_generation_prompt")
        _flag(tokenize, "tokenize")
        text = _text_out_raw(_lib.lib.dpo_tokenizer_apply_chat_template, self._handle, array, len(messages), flag)
        return self.encode(text, add_special_tokens=False) if tokenize else text

    def __repr__(self):
        if self._closed:
            return "Tokenizer(closed)"
        return "Tokenizer(vocab_size=%d, bos_token_id=%r, eos_token_id=%r)" % (
            self.vocab_size, self.bos_token_id, self.eos_token_id)
