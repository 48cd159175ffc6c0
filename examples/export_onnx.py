"""Train a small CNN on the embedded 8x8 digits, export it to ONNX and safetensors, and run
the ONNX file with onnxruntime: no download, a few seconds.

The exported graph is the network's evaluation-mode forward pass traced through ndonnx; its
batch axis is dynamic, so onnxruntime scores the whole test set in one call. The
safetensors file holds the same parameters under portaconv's names and loads back into a
fresh network bit for bit. Needs ``pip install 'portaconv[onnx,safetensors]'``::

    python examples/export_onnx.py
    python examples/export_onnx.py --epochs 5 --out /tmp/digits
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

import portaconv
from portaconv.data import DataLoader, load_dataset, standardize
from portaconv.interop import export_onnx, load_safetensors, save_safetensors
from portaconv.layers import CrossEntropyLoss
from portaconv.models import build_model
from portaconv.optim import Adam


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", help="directory to keep the files in (default: none kept)")
    args = parser.parse_args()

    portaconv.set_backend("numpy")
    portaconv.manual_seed(0)
    digits = load_dataset("digits")
    X_train, X_test = standardize(digits.X_train, digits.X_test)
    model = build_model("cnn", (1, 8, 8), 10, widths=(8, 16), hidden=32)
    loss, optimizer = CrossEntropyLoss(), Adam(model, 3e-3)
    loader = DataLoader(X_train, digits.y_train, batch_size=64, shuffle=True, seed=0)
    for epoch in range(args.epochs):
        loader.set_epoch(epoch)
        for X, y in loader:
            loss.forward(model.forward(X), y)
            model.zero_grad()
            model.backward(loss.backward())
            optimizer.step()
    model.eval()

    with tempfile.TemporaryDirectory() as scratch:
        out = Path(args.out or scratch)
        out.mkdir(parents=True, exist_ok=True)
        report(model, out, X_test, digits.y_test)
        if args.out:
            print(f"files in {out}")


def report(model, out: Path, X_test: np.ndarray, y_test: np.ndarray) -> None:
    """Export ``model`` into ``out``, score the ONNX file with onnxruntime, reload the
    safetensors file into a fresh network; print one line."""
    info = export_onnx(model, out / "digits_cnn.onnx", (1, 8, 8))  # checked with onnxruntime
    save_safetensors(model, out / "digits_cnn.safetensors")

    import onnxruntime

    session = onnxruntime.InferenceSession(str(out / "digits_cnn.onnx"))
    (logits,) = session.run(["output"], {"input": X_test.astype(np.float32)})
    onnx_accuracy = float(np.mean(logits.argmax(axis=1) == y_test))
    ours = portaconv.to_numpy(model.forward(portaconv.to_backend(X_test)))

    fresh = build_model("cnn", (1, 8, 8), 10, widths=(8, 16), hidden=32)
    load_safetensors(fresh, out / "digits_cnn.safetensors")
    same = all(
        np.array_equal(portaconv.to_numpy(a), portaconv.to_numpy(b))
        for a, b in zip(fresh.state_dict().values(), model.state_dict().values())
    )
    print(
        f"ONNX opset {info['opset']}, {info['nodes']} nodes; onnxruntime test accuracy "
        f"{onnx_accuracy:.4f} on {len(X_test)} digits (largest difference from portaconv "
        f"{np.max(np.abs(logits - ours)):.1e}); safetensors round trip "
        f"{'bitwise' if same else 'DIFFERS'}"
    )


if __name__ == "__main__":
    main()
