"""The backend table (``bench/report/backend.py``): JAX benchmarks next to their TensorFlow
twins from the same run, on a hand-made fixture (no TensorFlow, no JAX)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from test_report import CPU, first_table, number, raw, run_report, section

from bench.report.backend import device_kind


def with_jax(path: Path) -> dict:
    """The CPU fixture plus jax_fit and jax_custom on the MLP, 2x and 0.5x their XLA twins."""
    data = raw(CPU)
    by_name = {b["name"]: b for b in data["benchmarks"]}
    for impl, twins, scale in (
        ("jax_fit", ["keras_fit", "keras_fit_xla"], 2.0),
        ("jax_custom", ["custom_graph", "custom_xla"], 0.5),
    ):
        bench = copy.deepcopy(by_name[f"test_step[{twins[1]}-mlp]"])
        bench["name"] = f"test_jax_step[{impl}-mlp]"
        bench["stats"] = {
            k: v * scale if isinstance(v, float) and k != "ops" else v
            for k, v in bench["stats"].items()
        }
        bench["stats"]["data"] = [d * scale for d in bench["stats"]["data"]]
        bench["extra_info"].update(
            implementation=impl,
            backend="jax",
            jax="0.10.2",
            jaxlib="0.10.2",
            keras="3.15.1",
            device_kind="cpu",
            compile_s=1.5,
            cold_start_s=4.0,
            tf_twins=twins,
            samples_per_s=bench["extra_info"]["batch_size"] / bench["stats"]["median"],
        )
        data["benchmarks"].append(bench)
    path.write_text(json.dumps(data))
    return data


def test_the_backend_table_shows_jax_against_its_tensorflow_twins(tmp_path):
    data = with_jax(tmp_path / "jax.json")
    code, out = run_report(tmp_path, str(tmp_path / "jax.json"))
    assert code == 0
    md = (out / "report.md").read_text()
    rows = {r["JAX"]: r for r in first_table(section(md, "## mlp: TensorFlow vs JAX"))}
    assert list(rows) == ["jax_fit", "jax_custom"]
    medians = {b["name"]: b["stats"]["median"] for b in data["benchmarks"]}
    tf_xla = medians["test_step[keras_fit_xla-mlp]"]
    assert number(rows["jax_fit"]["JAX / TF XLA"]) == round(2.0, 2)
    assert rows["jax_fit"]["TF twin"] == "keras_fit"
    ratio = medians["test_jax_step[jax_fit-mlp]"] / medians["test_step[keras_fit-mlp]"]
    assert number(rows["jax_fit"]["JAX / TF"]) == round(ratio, 2)
    assert number(rows["jax_custom"]["JAX / TF XLA"]) == 0.5
    assert tf_xla > 0
    assert "## linreg: TensorFlow vs JAX" not in md  # no JAX benchmark there


def test_a_run_without_jax_has_no_backend_table(tmp_path):
    code, out = run_report(tmp_path, str(CPU))
    assert code == 0
    assert "TensorFlow vs JAX" not in (out / "report.md").read_text()


def on_devices(data: dict, jax_device: str, tf_device: str) -> dict:
    for bench in data["benchmarks"]:
        extra = bench["extra_info"]
        extra["device"] = jax_device if extra.get("backend") == "jax" else tf_device
    return data


def test_a_jax_row_on_another_device_than_its_twin_gets_no_ratio(tmp_path):
    """jax without its CUDA wheels runs on the CPU while TensorFlow uses the GPU: the ratio
    would compare two devices, so the cells say so and the note names both."""
    data = on_devices(with_jax(tmp_path / "jax.json"), "/CPU:0", "/GPU:0")
    (tmp_path / "jax.json").write_text(json.dumps(data))
    code, out = run_report(tmp_path, str(tmp_path / "jax.json"))
    assert code == 0
    text = section((out / "report.md").read_text(), "## mlp: TensorFlow vs JAX")
    rows = {r["JAX"]: r for r in first_table(text)}
    assert rows["jax_fit"]["JAX / TF"] == rows["jax_fit"]["JAX / TF XLA"] == "other device"
    assert rows["jax_custom"]["JAX / TF XLA"] == "other device"
    assert number(rows["jax_fit"]["ms/step"]) > 0  # the times themselves stay
    assert "**Different devices** (JAX on the CPU, TensorFlow on the GPU)" in text
    assert "pip install -e '.[jax-cuda]'" in text
    assert "A CPU is not a GPU" not in text


def test_both_sides_on_the_gpu_keep_their_ratios_and_say_where(tmp_path):
    data = on_devices(with_jax(tmp_path / "jax.json"), "/GPU:0", "/GPU:0")
    (tmp_path / "jax.json").write_text(json.dumps(data))
    code, out = run_report(tmp_path, str(tmp_path / "jax.json"))
    assert code == 0
    text = section((out / "report.md").read_text(), "## mlp: TensorFlow vs JAX")
    rows = {r["JAX"]: r for r in first_table(text)}
    assert number(rows["jax_fit"]["JAX / TF XLA"]) == 2.0
    assert "Both sides on the GPU." in text and "Different devices" not in text


def test_device_kinds_are_read_from_any_recorded_device_name():
    assert device_kind("/GPU:0") == "GPU" and device_kind("/CPU:0") == "CPU"
    assert device_kind("/job:localhost/replica:0/task:0/device:GPU:1") == "GPU"
    assert device_kind(None) is None and device_kind("") is None
