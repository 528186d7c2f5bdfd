"""The memoryview of trainer.gradients() points into library memory that dpo_*_trainer_free
releases. close() therefore refuses (BufferError, as mmap.close() does with exported buffers, and
the trainer stays usable) while any view of it, or anything made from one (slices, casts, numpy
arrays), is alive; once they are gone it closes. A view also keeps its trainer object alive, so
dropping the last reference to the trainer never frees the memory under a view."""
import gc

import pytest

import dpo
from conftest import TINY, completions, make_pairs


def _dpo():
    return dpo.DPOTrainer(dpo.Model.from_config(TINY, seed=1), args=dpo.DPOConfig(learning_rate=1e-2))


def test_close_refuses_while_a_view_exists():
    trainer, pairs = _dpo(), make_pairs()
    trainer.accumulate(pairs)
    view = trainer.gradients()
    first = view[0]
    with pytest.raises(BufferError, match="1 gradient view"):
        trainer.close()
    # The failed close changed nothing: the trainer works and the view still reads its buffer.
    assert view[0] == first
    trainer.apply_optimizer()
    assert trainer.global_step == 1 and view[0] == 0.0  # apply_optimizer zeroes the gradients
    part = view[1:5]  # a slice is a view too
    del view
    with pytest.raises(BufferError):
        trainer.close()
    del part
    trainer.close()
    with pytest.raises(dpo.InvalidArgumentError, match="not a live dpo_trainer"):
        trainer.step(pairs)


def test_numpy_arrays_and_with_blocks():
    np = pytest.importorskip("numpy")
    trainer = _dpo()
    trainer.accumulate(make_pairs())
    with trainer.gradients() as view:  # released at the end of the block
        assert len(view) > 0
    g = np.frombuffer(trainer.gradients(), dtype=np.float32)[2:]
    with pytest.raises(BufferError):
        trainer.close()
    with pytest.raises(BufferError):
        with trainer:  # the context exit is a close() too
            pass
    del g
    trainer.close()


def test_views_of_both_trainers_and_context_manager():
    model = dpo.Model.from_config(TINY, seed=2)
    sft = dpo.SFTTrainer(model, args=dpo.SFTConfig(learning_rate=1e-2))
    sft.accumulate(completions(make_pairs()))
    a, b = sft.gradients(), sft.gradients()
    with pytest.raises(BufferError, match="2 gradient views"):
        sft.close()
    model.close()  # the model handle can go: the trainer keeps its weights and the buffer
    assert a[0] == b[0]
    a.release()
    del b
    sft.close()


def test_view_keeps_an_unreferenced_trainer_alive():
    trainer = _dpo()
    trainer.accumulate(make_pairs())
    view = trainer.gradients()
    values = list(view)
    del trainer
    gc.collect()  # the trainer is not freed: the view refers to it
    assert list(view) == values
    view[0] = 1.5
    assert view[0] == 1.5


def test_views_in_garbage_cycles_do_not_block_close():
    trainer = _dpo()
    cycle = [trainer.gradients()]
    cycle.append(cycle)  # only the garbage collector frees this list
    del cycle
    trainer.close()
