"""swift-dpo: Direct Preference Optimization on the CPU (ctypes bindings of libdpo.so).

    import dpo
    model = dpo.Model.from_config({"vocab_size": 32, "hidden_size": 16, ...})
    trainer = dpo.DPOTrainer(model, args=dpo.DPOConfig(beta=0.1, learning_rate=1e-2))
    metrics = trainer.step([{"prompt_ids": [1, 2], "chosen_ids": [5], "rejected_ids": [6]}])

Names follow Hugging Face (model config) and TRL (DPOConfig fields, metric keys).
"""
from . import _lib
from .errors import (BufferTooSmallError, DPOError, DPOIOError, FormatError, InternalError, InvalidArgumentError,
                     NumericError, OutOfMemoryError, WrongStateError)
from .model import Model
from .lora import LoraConfig
from .tokenizer import Tokenizer
from .trainer import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

# Library start-up: the first dpo_set_num_threads sets OpenBLAS's thread count to the library's
# and shortens OpenBLAS's idle spin (setting OPENBLAS_THREAD_TIMEOUT in the environment for a
# moment, see include/dpo.h). Done here, at import, so no later call changes process-wide state.
_lib.check(_lib.lib.dpo_set_num_threads(_lib.lib.dpo_get_num_threads()))

__version__ = _lib.version()
ABI_VERSION = _lib.ABI_VERSION
library_path = _lib.path


def get_num_threads():
    """Threads the library uses (OpenBLAS and its own loops); global to the process."""
    return _lib.lib.dpo_get_num_threads()


def set_num_threads(n):
    """Sets the library's thread count (1..1024)."""
    if isinstance(n, bool) or not isinstance(n, int) or not -2**31 <= n < 2**31:
        raise InvalidArgumentError("n must be an integer thread count, got %r" % (n,))
    _lib.check(_lib.lib.dpo_set_num_threads(n))


__all__ = ["Model", "LoraConfig", "Tokenizer", "DPOConfig", "DPOTrainer", "SFTConfig", "SFTTrainer", "DPOError", "InvalidArgumentError",
           "DPOIOError", "FormatError", "OutOfMemoryError", "NumericError", "WrongStateError", "InternalError",
           "BufferTooSmallError", "get_num_threads", "set_num_threads", "__version__"]
