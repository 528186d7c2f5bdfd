"""Compares two training runs for Tests/mpi/run.sh (no numpy needed):

    compare.py weights A.safetensors B.safetensors [--exact] [--tolerance T]
        every tensor of B in A with the same shape; max |a - b| / max |b| over all weights <= T
        (default 1e-5; or the same bits with --exact)
    compare.py metrics A.jsonl B.jsonl [--exact] [--skip PREFIX]...
        the same records (one JSON object a line) with the same keys, each value (but those whose name
        starts with a PREFIX) equal to a relative
        1e-5 (of max(|value|, 1e-2): a mean of float32 logits near 0 carries their rounding), or exactly with --exact; train_runtime and the
        train_*_per_second rates are times and not compared

Prints the largest difference; exits 1 on a mismatch."""
import array
import json
import struct
import sys


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            sys.exit("%s: tensor %s is %s, expected F32" % (path, name, info["dtype"]))
        lo, hi = info["data_offsets"]
        values = array.array("f")
        values.frombytes(data[8 + n + lo:8 + n + hi])
        if sys.byteorder != "little":
            values.byteswap()
        tensors[name] = (info["shape"], values)
    return tensors


def weights(a_path, b_path, exact, tolerance=1e-5):
    a, b = read_safetensors(a_path), read_safetensors(b_path)
    if set(a) != set(b):
        sys.exit("weights differ in tensor names: %s" % sorted(set(a) ^ set(b)))
    diff = scale = 0.0
    for name in b:
        if a[name][0] != b[name][0]:
            sys.exit("tensor %s: shape %s vs %s" % (name, a[name][0], b[name][0]))
        if exact and a[name][1].tobytes() != b[name][1].tobytes():
            sys.exit("tensor %s: not bit-identical" % name)
        for x, y in zip(a[name][1], b[name][1]):
            diff, scale = max(diff, abs(x - y)), max(scale, abs(y))
    rel = diff / scale if scale > 0 else diff
    print("weights: %d tensors, max |a - b| / max |b| = %.3g%s" % (len(b), rel, " (bit-identical)" if exact else ""))
    if rel > tolerance:
        sys.exit("weights differ by more than %g" % tolerance)


TIMES = {"train_runtime", "train_samples_per_second", "train_steps_per_second"}


def metrics(a_path, b_path, exact, skip=()):
    def records(path):
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    a, b = records(a_path), records(b_path)
    if len(a) != len(b) or not b:
        sys.exit("metrics: %d records vs %d" % (len(a), len(b)))
    worst = (0.0, None)
    for i, (x, y) in enumerate(zip(a, b)):
        if set(x) != set(y):
            sys.exit("metrics record %d: keys differ: %s" % (i, sorted(set(x) ^ set(y))))
        for k, v in y.items():
            if k in TIMES or any(k.startswith(p) for p in skip):
                continue
            if v is None or x[k] is None:
                if v != x[k]:
                    sys.exit("metrics record %d: %s is %s vs %s" % (i, k, x[k], v))
                continue
            err = abs(x[k] - v) / max(abs(v), 1e-2)
            if exact and x[k] != v:
                sys.exit("metrics record %d (step %s): %s = %r vs %r, not identical" % (i, y.get("step"), k, x[k], v))
            if err > worst[0]:
                worst = (err, "%s at step %s" % (k, y.get("step")))
            if err > 1e-5:
                sys.exit("metrics record %d (step %s): %s = %r vs %r" % (i, y.get("step"), k, x[k], v))
    print("metrics: %d records, largest relative difference %.3g (%s)" % (len(b), worst[0], worst[1]))


if __name__ == "__main__":
    kind, a_path, b_path = sys.argv[1:4]
    rest = sys.argv[4:]
    exact = "--exact" in rest
    skip = [rest[i + 1] for i, a in enumerate(rest[:-1]) if a == "--skip"]
    tolerance = [float(rest[i + 1]) for i, a in enumerate(rest[:-1]) if a == "--tolerance"]
    if kind == "weights":
        weights(a_path, b_path, exact, *tolerance[-1:])
    else:
        metrics(a_path, b_path, exact, skip)
