"""dpo.LoraConfig: PEFT's LoraConfig fields for LoRA training (peft_config=) and adapters."""
import math

from .errors import InvalidArgumentError
from .model import _json_fields


class LoraConfig:
    """PEFT's LoraConfig, same names and defaults: r=8, lora_alpha=8, lora_dropout=0.0,
    target_modules=None (q_proj and v_proj, PEFT's default for Llama; or a list of q_proj, k_proj,
    v_proj, o_proj, gate_proj, up_proj, down_proj, or "all-linear"), bias="none", use_rslora=False,
    init_lora_weights=True (A Kaiming-uniform, B zero; False: B random too; "gaussian"),
    modules_to_save=None, task_type="CAUSAL_LM". Features swift-dpo does not implement (bias other
    than "none", modules_to_save such as lm_head or embed_tokens, use_dora, rank_pattern, ...) are
    refused by the library, naming the field, when the config is used."""

    _FIELDS = {"r": 8, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": None, "bias": "none",
               "use_rslora": False, "init_lora_weights": True, "modules_to_save": None, "task_type": "CAUSAL_LM",
               "fan_in_fan_out": False, "use_dora": False, "layers_to_transform": None, "layers_pattern": None,
               "rank_pattern": {}, "alpha_pattern": {}, "exclude_modules": None, "lora_bias": False,
               "inference_mode": False, "base_model_name_or_path": None}

    def __init__(self, **fields):
        for key in fields:
            if key not in self._FIELDS:
                raise TypeError("LoraConfig.__init__() got an unexpected keyword argument '%s' (fields: %s)"
                                % (key, ", ".join(self._FIELDS)))
        values = dict(self._FIELDS)
        values.update(fields)
        for key in ("r",):
            v = values[key]
            if isinstance(v, bool) or not isinstance(v, int):
                raise InvalidArgumentError("%s must be an integer, got %r" % (key, v))
        for key in ("lora_alpha", "lora_dropout"):
            v = values[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise InvalidArgumentError("%s must be a finite number, got %r" % (key, v))
        t = values["target_modules"]
        if t is not None and not isinstance(t, str):
            values["target_modules"] = list(t)
        self.__dict__["_fields"] = values

    def __getattr__(self, name):
        fields = self.__dict__.get("_fields", {})
        if name in fields:
            return fields[name]
        raise AttributeError("LoraConfig has no field '%s'" % name)

    def __setattr__(self, name, value):
        if name not in self._fields:
            raise AttributeError("LoraConfig has no field '%s'" % name)
        self._fields[name] = value

    def to_dict(self):
        return dict(self._fields)

    def _json(self):
        fields = {k: v for k, v in self._fields.items() if k != "inference_mode"}
        return _json_fields(fields)

    def __repr__(self):
        return "LoraConfig(%s)" % ", ".join("%s=%r" % kv for kv in self._fields.items())
