"""Device policy: provider order per device string, and the fall back to CPU when an accelerator
fails at session creation or at the first inference.

This machine has no GPU, so accelerator *failures* are injected through ``OnnxSession``'s
``session_factory`` (tests say so in their names). Every session that actually computes is a
real onnxruntime CPU session over a tiny real ONNX model built here (``y = a + b``).
"""
from __future__ import annotations

import logging

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from agender.devices import OnnxSession, device_label, parse_device, providers_for
from agender.errors import AgenderError, ModelError

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TRT = "TensorrtExecutionProvider"
OPENVINO = "OpenVINOExecutionProvider"
ALL_GPU = [TRT, CUDA, CPU]
CUDNN_ERROR = "CUDNN failure 4: CUDNN_STATUS_INTERNAL_ERROR ; GPU=0 ; expr=cudnnSetStream(...)"


@pytest.fixture(scope="module")
def add_model() -> bytes:
    """A real ONNX graph: y = a + b over float32 [N, 3]."""
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 3])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"])], "add", [a, b], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by every onnxruntime we support
    return model.SerializeToString()


def feeds(n: int = 2) -> dict[str, np.ndarray]:
    a = np.arange(3 * n, dtype=np.float32).reshape(n, 3)
    return {"a": a, "b": np.ones_like(a)}


def names(providers) -> list[str]:
    return [p[0] if isinstance(p, tuple) else p for p in providers]


class AcceleratorSession:
    """A real CPU session dressed up as a CUDA one; its first run can fail the way cuDNN does,
    or every run can come back off by ``drift`` (a kernel that computes something else)."""

    def __init__(self, real, fail_first_run: bool, drift: float = 0.0):
        self.real, self.fail_first_run, self.runs, self.drift = real, fail_first_run, 0, drift

    def get_providers(self):
        return [CUDA, CPU]

    def get_inputs(self):
        return self.real.get_inputs()

    def get_outputs(self):
        return self.real.get_outputs()

    def run(self, outputs, feeds):
        self.runs += 1
        if self.fail_first_run and self.runs == 1:
            raise RuntimeError(CUDNN_ERROR + "\nsecond line of the ORT message")
        return [y + self.drift for y in self.real.run(outputs, feeds)]


class Factory:
    """An ``InferenceSession`` stand-in: real CPU sessions, a scripted fault for anything else."""

    def __init__(self, fault: str):
        assert fault in ("create", "first_run", "none", "wrong", "fp16")
        self.fault = fault
        self.calls: list[list[str]] = []

    def __call__(self, model, sess_options=None, providers=None):
        self.calls.append(names(providers))
        real = ort.InferenceSession(model, sess_options=sess_options, providers=[CPU])
        if names(providers)[0] == CPU:
            return real
        if self.fault == "create":
            raise RuntimeError("CUDA failure 100: no CUDA-capable device is detected ; GPU=0")
        drift = {"wrong": 0.5, "fp16": 1e-4}.get(self.fault, 0.0)
        return AcceleratorSession(real, fail_first_run=self.fault == "first_run", drift=drift)


# --------------------------------------------------------------------------- providers_for


def test_auto_prefers_accelerators_in_policy_order_and_puts_cpu_last():
    got = providers_for("auto", [CPU, CUDA, OPENVINO, TRT])
    assert names(got) == [TRT, CUDA, OPENVINO, CPU]


def test_auto_on_a_cpu_only_machine_is_just_cpu():
    assert providers_for("auto", [CPU]) == [CPU]


def test_cpu_means_only_cpu_even_when_accelerators_exist():
    assert providers_for("cpu", ALL_GPU) == [CPU]


def test_cuda_index_is_passed_as_device_id():
    assert providers_for("cuda:1", ALL_GPU) == [(CUDA, {"device_id": 1}), CPU]
    assert providers_for("cuda", ALL_GPU) == [(CUDA, {"device_id": 0}), CPU]
    assert providers_for("GPU:2", ALL_GPU) == [(CUDA, {"device_id": 2}), CPU]


def test_cuda_requested_but_not_available_leaves_cpu_only():
    assert providers_for("cuda", [CPU]) == [CPU]


def test_tensorrt_keeps_cuda_behind_it_for_nodes_it_cannot_build():
    assert providers_for("tensorrt:1", ALL_GPU) == [(TRT, {"device_id": 1}), (CUDA, {"device_id": 1}), CPU]


def test_cpu_is_last_for_every_device_string():
    for dev in ("auto", "cpu", "cuda", "cuda:3", "tensorrt", "openvino", "coreml", "directml"):
        assert names(providers_for(dev, [*ALL_GPU, OPENVINO]))[-1] == CPU


@pytest.mark.parametrize("bad", ["tpu", "cuda:x", "cuda:-1", "vulkan:0"])
def test_unknown_device_string_is_a_one_line_agender_error(bad):
    with pytest.raises(AgenderError) as info:
        providers_for(bad, [CPU])
    msg = str(info.value)
    assert "\n" not in msg and repr(bad) in msg and "cuda:1" in msg


def test_parse_device_and_labels():
    assert parse_device(" CUDA:1 ") == ("cuda", 1)
    assert parse_device("") == ("auto", 0)
    assert device_label(TRT) == "TensorRT" and device_label(CUDA) == "CUDA" and device_label(CPU) == "CPU"


# --------------------------------------------------------------------------- OnnxSession, real CPU


def test_cpu_session_runs_the_add_model(add_model):
    sess = OnnxSession(add_model, device="cpu", threads=1)
    (y,) = sess.run(feeds())
    np.testing.assert_array_equal(y, feeds()["a"] + 1)
    assert sess.device_used == "CPU" and sess.fallback_reason == ""
    assert sess.input_names == ["a", "b"] and sess.output_names == ["y"]


def test_cuda_requested_on_this_cpu_only_machine_runs_on_cpu_and_says_why(add_model, caplog):
    if CUDA in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with caplog.at_level(logging.WARNING, logger="agender.devices"):
        sess = OnnxSession(add_model, device="cuda", threads=1, name="add")
    assert sess.device_used == "CPU (CUDA unavailable)"
    np.testing.assert_array_equal(sess.run(feeds())[0], feeds()["a"] + 1)
    assert len(caplog.records) == 1 and "add: CUDA unavailable" in caplog.records[0].getMessage()


def test_broken_model_bytes_fail_with_one_line_model_error():
    with pytest.raises(ModelError) as info:
        OnnxSession(b"definitely not an onnx graph", device="cpu", threads=1, name="ssrnet:wiki age")
    assert "\n" not in str(info.value) and "ssrnet:wiki age" in str(info.value)


# --------------------------------------------------------------------------- OnnxSession fall back


def test_falls_back_to_cpu_when_accelerator_fails_at_creation_with_injected_failing_provider(add_model, caplog):
    factory = Factory("create")
    with caplog.at_level(logging.WARNING, logger="agender.devices"):
        sess = OnnxSession(add_model, device="cuda:1", threads=1, name="add",
                           session_factory=factory, available=[CUDA, CPU])
        outs = [sess.run(feeds())[0] for _ in range(3)]
    assert factory.calls == [[CUDA, CPU], [CPU]]
    assert sess.device_used.startswith("CPU (accelerator failed: RuntimeError: CUDA failure 100")
    for y in outs:
        np.testing.assert_array_equal(y, feeds()["a"] + 1)
    assert [r.getMessage() for r in caplog.records] == [f"add: {sess.fallback_reason}, running on CPU"]


def test_falls_back_to_cpu_when_accelerator_fails_at_first_inference_with_injected_failing_provider(
    add_model, caplog
):
    factory = Factory("first_run")
    with caplog.at_level(logging.WARNING, logger="agender.devices"):
        sess = OnnxSession(add_model, device="auto", threads=1, name="add",
                           session_factory=factory, available=ALL_GPU)
        assert sess.device_used == "CUDA"  # creation looked fine
        outs = [sess.run(feeds(n))[0] for n in (1, 2, 5)]
    assert factory.calls == [[TRT, CUDA, CPU], [CPU]]
    assert sess.device_used == f"CPU (accelerator failed: RuntimeError: {CUDNN_ERROR})"
    assert "\n" not in sess.device_used
    for n, y in zip((1, 2, 5), outs):
        np.testing.assert_array_equal(y, feeds(n)["a"] + 1)
    assert len(caplog.records) == 1 and "accelerator failed" in caplog.records[0].getMessage()


def test_healthy_accelerator_is_kept_after_first_inference_with_injected_failing_provider(add_model, caplog):
    factory = Factory("none")
    with caplog.at_level(logging.WARNING, logger="agender.devices"):
        sess = OnnxSession(add_model, device="cuda", threads=1, session_factory=factory, available=[CUDA, CPU])
        sess.run(feeds())
        sess.run(feeds())
    # the first inference is also run on CPU once, as a reference; then the accelerator alone
    assert sess.device_used == "CUDA" and factory.calls == [[CUDA, CPU], [CPU]] and not caplog.records


def test_bad_input_on_first_run_does_not_demote_the_accelerator_with_injected_failing_provider(add_model, caplog):
    factory = Factory("none")
    sess = OnnxSession(add_model, device="cuda", threads=1, session_factory=factory, available=[CUDA, CPU])
    wrong = {"a": np.zeros((2, 4), np.float32), "b": np.zeros((2, 4), np.float32)}  # model wants [N, 3]
    with caplog.at_level(logging.WARNING, logger="agender.devices"):
        with pytest.raises(Exception):
            sess.run(wrong)
    assert sess.device_used == "CUDA" and not caplog.records
    np.testing.assert_array_equal(sess.run(feeds())[0], feeds()["a"] + 1)
    assert sess.device_used == "CUDA"


def test_an_accelerator_that_computes_wrong_answers_is_replaced_by_cpu_with_injected_drifting_provider(
    add_model, caplog
):
    factory = Factory("wrong")  # every output off by 0.5: a broken kernel, not a crash
    with caplog.at_level(logging.WARNING, logger="agender.devices"):
        sess = OnnxSession(add_model, device="cuda", threads=1, name="add",
                           session_factory=factory, available=[CUDA, CPU])
        outs = [sess.run(feeds(n))[0] for n in (2, 3)]
    for n, y in zip((2, 3), outs):
        np.testing.assert_array_equal(y, feeds(n)["a"] + 1)  # CPU's answers from the first run on
    assert sess.device_used.startswith("CPU (accelerator disagrees with CPU: output 0 max |Δ| 0.5")
    assert len(caplog.records) == 1 and "\n" not in caplog.records[0].getMessage()


def test_an_accelerator_within_fp16_rounding_of_cpu_is_kept_with_injected_drifting_provider(add_model, caplog):
    factory = Factory("fp16")
    with caplog.at_level(logging.WARNING, logger="agender.devices"):
        sess = OnnxSession(add_model, device="cuda", threads=1, session_factory=factory, available=[CUDA, CPU])
        sess.run(feeds())
        sess.run(feeds())
    assert sess.device_used == "CUDA" and not caplog.records
