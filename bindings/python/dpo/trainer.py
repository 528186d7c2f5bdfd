"""DPOConfig / DPOTrainer and SFTConfig / SFTTrainer with TRL's names, over libdpo."""
import copy
import ctypes
import json
import threading
from ctypes import POINTER, c_double, c_float, c_int64, c_void_p

from . import _batch, _lib
from .dataset import prepare, resolve_tokenizer
from .errors import InvalidArgumentError
from .loop import Loop, TrainerState, last_checkpoint
from .model import Handle, Model, _json_fields

# TRL's metric names, in TRL's logging order, for the fields of dpo_metrics / dpo_sft_metrics.
_DPO_METRICS = [("loss", "loss"), ("rewards/chosen", "rewards_chosen"), ("rewards/rejected", "rewards_rejected"),
                ("rewards/accuracies", "rewards_accuracies"), ("rewards/margins", "rewards_margins"),
                ("logps/chosen", "logps_chosen"), ("logps/rejected", "logps_rejected"),
                ("logits/chosen", "logits_chosen"), ("logits/rejected", "logits_rejected"),
                ("entropy", "entropy"), ("mean_token_accuracy", "mean_token_accuracy")]
_SFT_METRICS = [("loss", "loss"), ("mean_token_accuracy", "mean_token_accuracy"), ("entropy", "entropy")]


def _metrics(m, names, prefix=""):
    """TRL's metric dict: grad_norm and learning_rate on optimizer steps, num_tokens in training."""
    out = {prefix + name: getattr(m, field) for name, field in names}
    if m.optimizer_stepped:
        out[prefix + "grad_norm"] = m.grad_norm
        out[prefix + "learning_rate"] = m.learning_rate
    if not prefix:
        out["num_tokens"] = m.num_tokens
    return out


class _Config:
    """A config with TRL's field names and defaults. Fields are validated by the library when the
    config is made (and again when a trainer uses it); unknown names raise TypeError."""

    _resolve = None   # the library's *_config_json function
    _defaults = None  # cached per class

    def __init__(self, **fields):
        cls = type(self)
        if cls._defaults is None:
            cls._defaults = json.loads(_lib.text_out(cls._resolve, None))
        for key in fields:
            if key not in cls._defaults:
                raise TypeError("%s.__init__() got an unexpected keyword argument '%s' (fields: %s)"
                                % (cls.__name__, key, ", ".join(cls._defaults)))
        text = _json_fields(fields)
        object.__setattr__(self, "_fields", json.loads(_lib.text_out(cls._resolve, text)))

    def __getattr__(self, name):
        fields = self.__dict__.get("_fields", {})
        if name in fields:
            return fields[name]
        raise AttributeError("%s has no field '%s'" % (type(self).__name__, name))

    def __setattr__(self, name, value):
        if name not in self._fields:
            raise AttributeError("%s has no field '%s'" % (type(self).__name__, name))
        changed = dict(self._fields)
        changed[name] = value
        text = _json_fields(changed)
        object.__setattr__(self, "_fields", json.loads(_lib.text_out(type(self)._resolve, text)))

    def to_dict(self):
        return dict(self._fields)

    def __eq__(self, other):
        return type(self) is type(other) and self._fields == other._fields

    def __repr__(self):
        return "%s(%s)" % (type(self).__name__, ", ".join("%s=%r" % kv for kv in self._fields.items()))


class DPOConfig(_Config):
    """TRL's DPOConfig fields (beta, loss_type, loss_weights, label_smoothing, f_divergence_type,
    f_alpha_divergence_coef, ld_alpha, use_weighting, discopop_tau, max_length, truncation_mode,
    precompute_ref_log_probs, sync_ref_model, ref_model_mixup_alpha, ref_model_sync_steps, bf16), the
    optimizer fields of TrainingArguments (learning_rate, weight_decay, adam_beta1, adam_beta2,
    adam_epsilon, max_grad_norm, lr_scheduler_type, warmup_steps, warmup_ratio, max_steps,
    gradient_accumulation_steps, seed) and its loop fields (output_dir, num_train_epochs,
    per_device_train_batch_size, per_device_eval_batch_size, logging_steps, logging_first_step,
    eval_strategy, eval_steps, save_strategy, save_steps, save_total_limit, data_seed, shuffle,
    dataloader_drop_last, resume_from_checkpoint, report_to (none, jsonl, tensorboard), logging_dir,
    disable_tqdm), with TRL's defaults."""

    _resolve = _lib.lib.dpo_trainer_config_json


class SFTConfig(_Config):
    """TRL's SFTConfig fields that apply: max_length, truncation_mode, completion_only_loss,
    assistant_only_loss, dataset_text_field, bf16, and the optimizer and loop fields of DPOConfig
    (learning_rate 2e-5). bf16 (default False, where TRL defaults to True): the model's matrix
    products with bf16 inputs and fp32 accumulation, as PyTorch's CPU autocast."""

    _resolve = _lib.lib.dpo_sft_trainer_config_json


def _peft_json(peft_config):
    from .lora import LoraConfig
    if not isinstance(peft_config, LoraConfig):
        raise InvalidArgumentError("peft_config must be a dpo.LoraConfig, got %r" % type(peft_config).__name__)
    return peft_config._json()


def _model_handle(model, name):
    if not isinstance(model, Model):
        raise InvalidArgumentError("%s must be a dpo.Model, got %r" % (name, type(model).__name__))
    return model._handle


class _Trainer(Handle):
    _config_type = None
    _metric_names = None
    _metrics_type = None
    _batch_type = None
    _fn = None  # function-name prefix

    def _setup(self, model, args, train_dataset, eval_dataset, processing_class, callbacks):
        """The datasets prepared as TRL's trainer prepares them (trainer.train_dataset[i] is a
        processed row), the tokenizer they use, the callbacks; the loop is made on first use."""
        self.model, self.args = model, args
        self._args_given = copy.deepcopy(args.to_dict())  # what the engine was configured with
        self.processing_class = resolve_tokenizer(processing_class, model)
        create = getattr(_lib.lib, self._fn + "dataset_create")
        self.train_dataset = prepare(create, self._handle, self.processing_class, train_dataset, "train_dataset")
        self.eval_dataset = prepare(create, self._handle, self.processing_class, eval_dataset, "eval_dataset")
        # transformers accepts callback classes as well as instances.
        self.callbacks = [cb() if isinstance(cb, type) else cb for cb in (callbacks or [])]
        self._loop = None
        self._loop_lock = threading.Lock()

    def _setup_or_undo(self, model, args, train_dataset, eval_dataset, processing_class, callbacks, peft_config):
        """_setup; if it fails (e.g. a dataset row), the trainer is freed and an adapter it attached
        (peft_config) removed, so a failed constructor leaves the model as it was."""
        try:
            self._setup(model, args, train_dataset, eval_dataset, processing_class, callbacks)
        except BaseException:
            Handle.close(self)
            if peft_config is not None:
                model.unload()
            raise

    def _call(self, name, *args):
        if name != "global_step":  # a counter read changes nothing
            self._check_args()
        _lib.check(getattr(_lib.lib, self._fn + name)(self._handle, *args))

    def _run(self, name, batch, prefix=""):
        self._check_args()
        b = self._batch_type(batch)
        m = _lib.new(self._metrics_type)
        self._call(name, ctypes.byref(b.struct), ctypes.byref(m))
        return _metrics(m, self._metric_names, prefix)

    def _check_args(self):
        """The engine trainer and the datasets were made with the args given to the constructor:
        trainer.args changed since is refused, not silently ignored."""
        now = self.args.to_dict() if isinstance(self.args, _Config) else None
        if now == self._args_given:
            return
        if now is None:
            changed = ["args replaced by %s" % type(self.args).__name__]
        else:
            changed = sorted(k for k in set(self._args_given) | set(now) if now.get(k) != self._args_given.get(k))
        raise InvalidArgumentError(
            "trainer.args changed after the trainer was made (%s): the engine and the datasets were "
            "configured with the args given to the constructor; make a new trainer with the new args"
            % ", ".join(changed))

    def _driver(self):
        """The engine loop, made on first use."""
        self._check_args()
        with self._loop_lock:
            if self._loop is None:
                self._loop = Loop(self, getattr(_lib.lib, self._fn + "loop_create"))
            return self._loop

    def close(self):
        super().close()  # first: it may refuse (live gradient views), and then nothing changes
        if getattr(self, "_loop", None) is not None:
            self._loop.close()
            self._loop = None

    # -- transformers' Trainer API, run by the engine's training loop --------------------------

    def train(self, resume_from_checkpoint=None):
        """Trains on train_dataset for max_steps (or num_train_epochs) with the args' batching,
        accumulation, logging, evaluation and checkpoints; returns TrainOutput(global_step,
        training_loss, metrics). resume_from_checkpoint: a checkpoint-<step> folder, or True for
        the last one in output_dir. Ctrl-C (or a callback's control.should_training_stop) stops
        after a checkpoint of the exact state, from which a resumed run continues bit-identically."""
        if self.train_dataset is None:
            raise InvalidArgumentError("train() needs a train_dataset")
        if resume_from_checkpoint is True:
            resume_from_checkpoint = last_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise InvalidArgumentError("resume_from_checkpoint=True: no checkpoint-<step> folder in %r"
                                           % self.args.output_dir)
        elif resume_from_checkpoint is False:
            resume_from_checkpoint = None
        output, self.interrupted_checkpoint = self._driver().train(resume_from_checkpoint)
        return output

    def evaluate(self, eval_dataset=None):
        """eval_ metrics of the model on eval_dataset (default: the trainer's), in batches of
        per_device_eval_batch_size, logged as a record (transformers' evaluate). Rows in any
        dataset format the trainer accepts. For one token batch without logging: evaluate_batch."""
        dataset = None
        if eval_dataset is not None:
            create = getattr(_lib.lib, self._fn + "dataset_create")
            dataset = prepare(create, self._handle, self.processing_class, eval_dataset, "eval_dataset")
        elif self.eval_dataset is None:
            raise InvalidArgumentError("evaluate() needs an eval_dataset (given here or to the trainer)")
        return self._driver().evaluate(dataset)

    def log(self, logs):
        """Adds a record (a dict of numbers) to state.log_history and the report_to sinks."""
        if not isinstance(logs, dict):
            raise InvalidArgumentError("logs must be a dict of numbers, got %s" % type(logs).__name__)
        self._driver().log(logs)

    def save_model(self, output_dir=None):
        """Saves the trained model (config.json + model.safetensors, or a LoRA model's adapter
        files) and, as TRL does, the tokenizer (processing_class) to output_dir (default
        args.output_dir)."""
        self._driver().save_model(output_dir)
        save = getattr(self.processing_class, "save_pretrained", None)
        if callable(save):
            save(str(output_dir if output_dir is not None else self.args.output_dir))

    @property
    def state(self):
        """transformers' TrainerState (global_step, epoch, max_steps, log_history, ...)."""
        return self._loop.state if self._loop is not None else TrainerState({"global_step": self.global_step})

    # -- step-level API for hosts that drive their own loop ------------------------------------

    def step(self, batch):
        """One training step (forward, backward; an optimizer step every gradient_accumulation_steps
        calls). Returns TRL's metrics; grad_norm and learning_rate appear on optimizer steps."""
        return self._run("step", batch)

    def evaluate_batch(self, batch):
        """Metrics of one token batch without any update and without logging, keys prefixed "eval_"."""
        return self._run("evaluate", batch, "eval_")

    def accumulate(self, batch):
        """Distributed grain: forward and backward of a micro-batch, gradients added to the buffer."""
        return self._run("accumulate", batch)

    def gradients(self):
        """Distributed grain: the flat float32 gradient buffer as a writable memoryview (zero-copy;
        ``numpy.frombuffer(trainer.gradients(), dtype=numpy.float32)`` wraps it). All-reduce it
        between accumulate() and apply_optimizer(). The view keeps the trainer alive, and close()
        raises BufferError while it (or a slice or numpy array made from it) exists: drop it,
        release() it, or use ``with trainer.gradients() as g:``."""
        data, count = POINTER(c_float)(), c_int64()
        self._call("gradients", ctypes.byref(data), ctypes.byref(count))
        return self._export((c_float * count.value).from_address(ctypes.addressof(data.contents)))

    def apply_optimizer(self):
        """Distributed grain: clip, AdamW step, zero the gradients. Returns the step's metrics."""
        m = _lib.new(self._metrics_type)
        self._call("apply_optimizer", ctypes.byref(m))
        return _metrics(m, self._metric_names)

    @property
    def global_step(self):
        out = c_int64()
        self._call("global_step", ctypes.byref(out))
        return out.value

    def save_checkpoint(self, path):
        """Writes a checkpoint directory (weights, optimizer, counters, RNG, config) atomically."""
        self._call("save_checkpoint", _lib.encode_path(path))

    def load_checkpoint(self, path):
        """Restores a checkpoint of save_checkpoint() into this trainer (same model config)."""
        self._call("load_checkpoint", _lib.encode_path(path))


class DPOTrainer(_Trainer):
    """TRL's DPOTrainer. With train_dataset (rows of prompt/chosen/rejected text, conversations,
    implicit prompts or token ids; a list, a datasets.Dataset or a JSONL path) tokenized by
    processing_class (a dpo.Tokenizer or a transformers tokenizer; default the model's own), train()
    runs the engine's loop. step() takes token-id batches: lists of {"prompt_ids", "chosen_ids",
    "rejected_ids"} dicts, optionally with "ref_chosen_logps" and "ref_rejected_logps".
    ref_model=None uses a snapshot of the model's initial weights (or none with
    precompute_ref_log_probs). peft_config (a dpo.LoraConfig): a fresh LoRA adapter is attached to
    the model and trained alone; without ref_model the reference is the model with the adapter
    switched off (no copy of the weights). A model that already has an adapter (load_adapter)
    trains it, and without ref_model against a frozen copy of it (TRL's "ref" adapter)."""

    _free = _lib.lib.dpo_trainer_free
    _metric_names = _DPO_METRICS
    _metrics_type = _lib.Metrics
    _batch_type = _batch.Preference
    _fn = "dpo_trainer_"

    def __init__(self, model, ref_model=None, args=None, train_dataset=None, eval_dataset=None,
                 processing_class=None, callbacks=None, peft_config=None):
        args = DPOConfig() if args is None else args
        if not isinstance(args, DPOConfig):
            raise InvalidArgumentError("args must be a dpo.DPOConfig, got %r" % type(args).__name__)
        policy = _model_handle(model, "model")
        reference = None if ref_model is None else _model_handle(ref_model, "ref_model")
        out = c_void_p()
        text = json.dumps(args.to_dict()).encode()
        if peft_config is None:
            _lib.check(_lib.lib.dpo_trainer_create_json(policy, reference, text, ctypes.byref(out)))
        else:
            _lib.check(_lib.lib.dpo_trainer_create_peft_json(policy, reference, text, _peft_json(peft_config),
                                                             ctypes.byref(out)))
        super().__init__(out.value)
        self.ref_model = ref_model
        self._setup_or_undo(model, args, train_dataset, eval_dataset, processing_class, callbacks, peft_config)

    def precompute_ref_log_probs(self, batch):
        """The batch with "ref_chosen_logps" and "ref_rejected_logps" added to (copies of) its items,
        computed with the reference (or the current weights when there is none)."""
        b = _batch.Preference(batch, with_reference=False)
        n = b.count
        chosen, rejected = (c_double * n)(), (c_double * n)()
        self._call("precompute_ref_logps", ctypes.byref(b.struct), chosen, rejected, n)
        return [dict(item, ref_chosen_logps=chosen[i], ref_rejected_logps=rejected[i])
                for i, item in enumerate(_batch._as_list(batch))]


class SFTTrainer(_Trainer):
    """TRL's SFTTrainer. train_dataset rows: text, messages, prompt/completion (strings or
    conversations), or token ids (input_ids with completion_mask, or prompt_ids/completion_ids);
    train() runs the engine's loop. step() takes lists of {"prompt_ids", "completion_ids"} (loss
    on completions)."""

    _free = _lib.lib.dpo_sft_trainer_free
    _metric_names = _SFT_METRICS
    _metrics_type = _lib.SFTMetrics
    _batch_type = _batch.Completion
    _fn = "dpo_sft_trainer_"

    def __init__(self, model, args=None, train_dataset=None, eval_dataset=None, processing_class=None,
                 callbacks=None, peft_config=None):
        args = SFTConfig() if args is None else args
        if not isinstance(args, SFTConfig):
            raise InvalidArgumentError("args must be a dpo.SFTConfig, got %r" % type(args).__name__)
        out = c_void_p()
        text = json.dumps(args.to_dict()).encode()
        handle = _model_handle(model, "model")
        if peft_config is None:
            _lib.check(_lib.lib.dpo_sft_trainer_create_json(handle, text, ctypes.byref(out)))
        else:
            _lib.check(_lib.lib.dpo_sft_trainer_create_peft_json(handle, text, _peft_json(peft_config), ctypes.byref(out)))
        super().__init__(out.value)
        self._setup_or_undo(model, args, train_dataset, eval_dataset, processing_class, callbacks, peft_config)


