"""Multiply-accumulates per inference of the nets the Pi profile runs (YuNet at several detect
widths, Cydral's age and gender nets per face), from the ONNX graphs' conv and gemm shapes.

Why op counts: Raspberry Pi speed is not measured here (emulated speed is meaningless), but the
work a net does scales with these figures on any CPU, so they rank detect widths honestly.
Usage: python benchmarks/op_counts.py
"""
from __future__ import annotations

import onnx
from onnx import numpy_helper, shape_inference


def macs(path: str, shape: list[int]) -> float:
    m = onnx.load(path)
    inp = m.graph.input[0]
    for d, v in zip(inp.type.tensor_type.shape.dim, shape):
        d.ClearField("dim_param")
        d.dim_value = v
    m = shape_inference.infer_shapes(m)
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
              for vi in list(m.graph.value_info) + list(m.graph.output) + list(m.graph.input)}
    init = {i.name: numpy_helper.to_array(i).shape for i in m.graph.initializer}
    total = 0.0
    for n in m.graph.node:
        if n.op_type == "Conv":
            w = init[n.input[1]]  # Cout, Cin/groups, kh, kw
            out = shapes.get(n.output[0])
            if out and len(out) == 4:
                total += out[2] * out[3] * w[0] * w[1] * w[2] * w[3]
        elif n.op_type == "Gemm":
            w = init[n.input[1]]
            total += w[0] * w[1]
    return total


def main() -> None:
    import sys
    from pathlib import Path

    from agender.estimators.cydral import CydralBundle

    yunet = str(Path(__file__).resolve().parents[1].parent / "shared" / "models" / "yunet" / "face_detection_yunet.onnx")
    b = CydralBundle.load(verify=False)
    print("net                         input          MMAC")
    for w in (640, 480, 320):
        h = round(w * 9 / 16)
        ph, pw = (h - 1) // 32 * 32 + 32, (w - 1) // 32 * 32 + 32
        print(f"yunet @ {w} px (16:9)       {pw}x{ph:<9} {macs(yunet, [1, 3, ph, pw]) / 1e6:8.1f}")
    print(f"cydral age (per face)       64x64          {macs(str(b.age.path), [1, 3, 64, 64]) / 1e6:8.1f}")
    print(f"cydral gender (per face)    32x32          {macs(str(b.gender.path), [1, 3, 32, 32]) / 1e6:8.1f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
