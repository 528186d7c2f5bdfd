"""The engine's training loop (transformers' Trainer.train) as the Python trainers drive it:
TrainOutput, TrainerState, callbacks, progress and log lines."""
import collections
import ctypes
import json
import os
import re
import signal
import sys
import threading
import time
from ctypes import c_char_p, c_void_p

from . import _lib
from .errors import InvalidArgumentError

TrainOutput = collections.namedtuple("TrainOutput", ["global_step", "training_loss", "metrics"])
TrainOutput.__doc__ = "What train() returns, as transformers' TrainOutput."


class TrainerState:
    """transformers' TrainerState fields: global_step, epoch, max_steps, num_train_epochs,
    logging_steps, eval_steps, save_steps, train_batch_size, log_history (a list of dicts)."""

    def __init__(self, fields=None):
        self.global_step, self.epoch, self.max_steps, self.num_train_epochs = 0, 0.0, 0, 0
        self.logging_steps = self.eval_steps = self.save_steps = self.train_batch_size = 0
        self.log_history = []
        for key, value in (fields or {}).items():
            setattr(self, key, value)

    def __repr__(self):
        return "TrainerState(global_step=%d, epoch=%g, max_steps=%d, %d log records)" % (
            self.global_step, self.epoch, self.max_steps, len(self.log_history))


class TrainerControl:
    """What a callback may set, as transformers' TrainerControl: should_training_stop stops the
    run (after a checkpoint of the exact state, from which train(resume_from_checkpoint=...) goes on)."""

    def __init__(self):
        self.should_training_stop = False


class _Progress:
    """A progress bar with rate and ETA on a terminal; nothing otherwise (log lines remain)."""

    def __init__(self, stream):
        self.stream = stream
        self.enabled = hasattr(stream, "isatty") and stream.isatty()
        self.start = time.monotonic()
        self.first_step = None

    def update(self, step, total):
        if not self.enabled or total <= 0:
            return
        now = time.monotonic()
        if self.first_step is None:
            self.first_step, self.start = step - 1, now
        done = step - self.first_step
        rate = done / max(now - self.start, 1e-9)
        eta = (total - step) / rate if rate > 0 else 0
        width = 24
        filled = int(width * step / total)
        bar = "#" * filled + "." * (width - filled)
        self.stream.write("\r%3d%% [%s] %d/%d [%s<%s, %.2f it/s]" % (
            100 * step // total, bar, step, total, _clock(now - self.start), _clock(eta), rate))
        self.stream.flush()

    def line(self, text):
        if self.enabled:
            self.stream.write("\r\x1b[K")
        print(text, file=sys.stdout, flush=True)

    def close(self):
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def _clock(seconds):
    seconds = int(seconds)
    return "%02d:%02d" % divmod(seconds, 60) if seconds < 3600 else "%d:%02d:%02d" % (
        seconds // 3600, seconds % 3600 // 60, seconds % 60)


def _log_line(record):
    """A log record as transformers prints it: the dict without "step", numbers as they are."""
    return str({k: (round(v, 4) if isinstance(v, float) and k != "learning_rate" else v)
                for k, v in record.items() if k != "step"})


class Loop:
    """One dpo_loop handle for a trainer: created on first use with the trainer's datasets and
    the host callback; freed with the trainer."""

    def __init__(self, trainer, create):
        self.trainer = trainer
        self.callbacks = trainer.callbacks  # the trainer's list: callbacks added later are called too
        self.control = TrainerControl()
        self.state = TrainerState()
        self.error = None
        self.interrupted = False
        self.progress = None
        self._callback = _lib.LoopCallback(self._on_event)  # kept alive as long as the loop
        params = _lib.new(_lib.LoopParams)
        params.args_json = None
        params.train_dataset = trainer.train_dataset._handle if trainer.train_dataset is not None else None
        params.eval_dataset = trainer.eval_dataset._handle if trainer.eval_dataset is not None else None
        params.callback = self._callback
        params.user_data = None
        out = c_void_p()
        _lib.check(create(trainer._handle, ctypes.byref(params), ctypes.byref(out)))
        self.handle = c_void_p(out.value)
        self.refresh()

    def close(self):
        if self.handle is not None:
            _lib.check(_lib.lib.dpo_loop_free(self.handle))
            self.handle = None

    def __del__(self):
        try:
            if getattr(self, "handle", None) is not None and _lib is not None and _lib.lib is not None:
                _lib.lib.dpo_loop_free(self.handle)
                self.handle = None
        except Exception:
            pass

    def _json_call(self, function, *args):
        out = c_char_p()
        _lib.check(function(self.handle, *args, ctypes.byref(out)))
        return json.loads(out.value.decode("utf-8")) if out.value else None

    def refresh(self):
        self.state = TrainerState(self._json_call(_lib.lib.dpo_loop_state))
        return self.state

    # -- the host callback: runs inside the library's call, so it must never raise ------------

    def _on_event(self, _user_data, event, text):
        try:
            data = json.loads(text.decode("utf-8"))
            if event == _lib.EVENT_TRAIN_BEGIN:
                self._advance(data)
                self._notify("on_train_begin")
            elif event == _lib.EVENT_STEP_END:
                self._advance(data)
                if self.progress:
                    self.progress.update(self.state.global_step, self.state.max_steps)
                self._notify("on_step_end")
            elif event == _lib.EVENT_LOG:
                self.state.log_history.append(data)
                if self.progress:
                    self.progress.line(_log_line(data))
                self._notify("on_log", logs=data)
            elif event == _lib.EVENT_SAVE:
                self._notify("on_save", checkpoint=data.get("checkpoint"))
            return 1 if self.control.should_training_stop or self.interrupted else 0
        except BaseException as e:  # KeyboardInterrupt included: stop with a checkpoint, re-raise after
            if self.error is None:
                self.error = e
            return 1

    def _advance(self, data):
        self.state.global_step = data.get("global_step", self.state.global_step)
        self.state.max_steps = data.get("max_steps", self.state.max_steps)
        self.state.epoch = data.get("epoch", self.state.epoch)

    def _notify(self, name, **kwargs):
        for cb in self.callbacks:
            method = getattr(cb, name, None)
            if callable(method):
                method(self.trainer.args, self.state, self.control, **kwargs)

    def _run(self, body):
        """Runs a loop call. Ctrl-C while it runs only sets a flag (a KeyboardInterrupt raised
        inside the ctypes callback would be swallowed by ctypes): the callback then asks the loop
        to stop, which it does after a checkpoint, and KeyboardInterrupt is raised here after."""
        self.error = None
        self.interrupted = False
        self.control.should_training_stop = False
        self.progress = None if self.trainer.args.disable_tqdm else _Progress(sys.stderr)
        previous = None
        if threading.current_thread() is threading.main_thread():
            def on_sigint(signum, frame):
                self.interrupted = True
            previous = signal.signal(signal.SIGINT, on_sigint)
        failed = True
        try:
            result = body()
            failed = False
            return result
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
            if self.progress:
                self.progress.close()
            self.progress = None
            try:
                self.refresh()
            except Exception:
                if not failed and self.error is None:
                    raise  # otherwise the error already on its way out is the one to see
            if self.error is not None:
                error, self.error = self.error, None
                raise error
            if self.interrupted:
                self.interrupted = False
                raise KeyboardInterrupt

    # -- the loop's calls -----------------------------------------------------------------------

    def train(self, resume_from_checkpoint):
        path = None if resume_from_checkpoint is None else _lib.encode_path(resume_from_checkpoint)
        out = self._run(lambda: self._json_call(_lib.lib.dpo_loop_train, path))
        self._notify("on_train_end")
        return TrainOutput(out["global_step"], out["training_loss"], out["metrics"]), out["interrupted_checkpoint"]

    def evaluate(self, dataset):
        handle = dataset._handle if dataset is not None else None
        return self._run(lambda: self._json_call(_lib.lib.dpo_loop_evaluate, handle))

    def log(self, logs):
        try:
            text = json.dumps(logs, allow_nan=False, default=_lib_jsonable).encode()
        except (TypeError, ValueError) as e:
            raise InvalidArgumentError("logs: every value must be a finite number (%s)" % e) from None
        self._run(lambda: _lib.check(_lib.lib.dpo_loop_log(self.handle, text)))

    def save_model(self, output_dir):
        path = None if output_dir is None else _lib.encode_path(output_dir)
        _lib.check(_lib.lib.dpo_loop_save_model(self.handle, path))


def _lib_jsonable(x):
    if hasattr(x, "item"):
        return x.item()
    raise TypeError("%r is not a number" % (x,))


def last_checkpoint(output_dir):
    """transformers' get_last_checkpoint: the checkpoint-<step> folder of output_dir with the
    highest step, or None."""
    found = []
    try:
        names = os.listdir(output_dir)
    except OSError:
        return None
    for name in names:
        m = re.fullmatch(r"checkpoint-(\d+)", name)
        if m and os.path.isdir(os.path.join(output_dir, name)):
            found.append((int(m.group(1)), name))
    return os.path.join(output_dir, max(found)[1]) if found else None
