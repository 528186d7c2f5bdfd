#!/usr/bin/env python3
"""Generate the TensorBoard event-format fixture for swift-dpo's tests (dev-only tool).

Writes ``Tests/DPOTests/Fixtures/tensorboard/expected.json`` (small, committed), the references
``TensorBoardLogSinkTests`` checks swift-dpo's own TensorBoard writer against:

* ``crc32c``: CRC-32C and masked CRC-32C (TFRecord's) of a few byte strings, from TensorBoard's
  own implementation (``tensorboard.compat.tensorflow_stub.pywrap_tensorflow``).
* ``events``: TFRecords, hex, of single ``Event`` messages serialized by protobuf
  (``tensorboard.compat.proto.event_pb2``) and framed by TensorBoard's ``RecordWriter``: the
  ``file_version`` event, a ``SessionLog.START`` and scalar events as PyTorch's ``SummaryWriter``
  writes them (``Summary.Value(tag, simple_value)``). Steps and values are strings (int64 beyond
  2^53; nan, inf, -0.0) that Swift's ``Int64(_:)`` / ``Double(_:)`` parse.
* ``tags``: metric names and the TensorBoard tag transformers' ``rewrite_logs`` (what its
  ``TensorBoardCallback`` uses) gives each.

How to run (from the repository root, with the oracle venv plus tensorboard):
    .venv-oracle/bin/python tools/make_tensorboard_fixtures.py
Deterministic; rewrites only Tests/DPOTests/Fixtures/tensorboard/expected.json.
"""

import io
import json
import os
import random

import google.protobuf
import tensorboard
import transformers
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import crc32c, masked_crc32c
from tensorboard.summary.writer.record_writer import RecordWriter
from transformers.integrations.integration_utils import rewrite_logs

OUT = os.path.join(os.path.dirname(__file__), "..", "Tests", "DPOTests", "Fixtures", "tensorboard", "expected.json")


def framed(event):
    buf = io.BytesIO()
    RecordWriter(buf).write(event.SerializeToString())
    return buf.getvalue().hex()


def scalar(wall_time, step, tag, value):
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=float(value))])
    return {"kind": "scalar", "wall_time": wall_time, "step": str(step), "tag": tag, "value": repr(float(value)),
            "record": framed(event_pb2.Event(wall_time=wall_time, step=step, summary=summary))}


def main():
    rng = random.Random(12)
    blobs = [b"", b"a", b"123456789", bytes(32), bytes([0xFF] * 32), bytes(rng.randrange(256) for _ in range(1000))]
    crcs = [{"hex": b.hex(), "crc32c": crc32c(b), "masked": masked_crc32c(b)} for b in blobs]

    events = [
        {"kind": "file_version", "wall_time": 1712345678.123456,
         "record": framed(event_pb2.Event(wall_time=1712345678.123456, file_version="brain.Event:2"))},
        {"kind": "session_start", "wall_time": 1712345678.5, "step": "0",
         "record": framed(event_pb2.Event(wall_time=1712345678.5, step=0,
                                          session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)))},
        {"kind": "session_start", "wall_time": 1712345679.25, "step": "300",
         "record": framed(event_pb2.Event(wall_time=1712345679.25, step=300,
                                          session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)))},
        scalar(1712345680.0, 1, "train/loss", 0.6931471805599453),
        scalar(1712345680.0, 0, "train/loss", 0.0),  # step 0 left out, a 0 simple_value (oneof) kept
        scalar(0.0, 10, "train/learning_rate", 1e-6),  # wall_time 0 left out
        scalar(1712345681.75, 127, "eval/rewards/accuracies", -0.0),
        scalar(1712345681.75, 128, "train/grad_norm", float("inf")),
        scalar(1712345681.75, 2**40, "train/num_tokens", 123456789.0),
        scalar(1712345681.75, 2**62 + 3, "eval/loss", float("-inf")),
        scalar(1712345681.75, -1, "test/loss", 3.4e38),
        scalar(1712345681.75, 5, "train/" + "x" * 150, 1.0000001192092896),  # tag > 127 bytes
        scalar(1712345681.75, 6, "train/étape/größe", 0.1),  # UTF-8 tag
        scalar(1712345681.75, 7, "train/tiny", 1e-45),  # float32 subnormal
    ]

    names = ["loss", "grad_norm", "learning_rate", "epoch", "num_tokens", "rewards/chosen", "logps/rejected",
             "eval_loss", "eval_rewards/accuracies", "test_loss", "train_runtime", "train_loss", "evaluation_x",
             "eval_", "test_", "eval", "Eval_loss", "eval_eval_loss", "eval_\u0301x", "test_é", "étape"]
    tags = [[name, rewrite_logs({name: 0.0}).popitem()[0]] for name in names]

    out = {
        "versions": {"tensorboard": tensorboard.__version__, "protobuf": google.protobuf.__version__,
                     "transformers": transformers.__version__},
        "crc32c": crcs,
        "events": events,
        "tags": tags,
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {os.path.normpath(OUT)}: {len(crcs)} CRCs, {len(events)} events, {len(tags)} tags")


if __name__ == "__main__":
    main()
