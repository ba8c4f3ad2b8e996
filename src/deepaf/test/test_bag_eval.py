"""Offline evaluation of a bag and conversion of a recorded focal stack (ROS-free)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from deepaf.bag_command import main as bag_main
from deepaf.bags import BagError, BagWriter, make_qos
from deepaf.bags.evaluate import evaluate_bag
from deepaf.bags.to_dataset import bag_to_dataset, sharpness_peak
from deepaf.bags.truth import PoseTrack, truth_source
from deepaf.bags.typestore import deepaf_typestore

SIM = {"namespace": "/m", "profile": "20x", "protocol": "lab_a_standard", "slide_seed": 3}
POSES = [(0.010, 0.012, 0.0), (0.011, 0.012, 0.0), (0.012, 0.013, 0.0)]
DZ_UM = [-3.0, 1.0, 2.5]  # z - best focus of each preview


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    import torch
    from deepaf_focus.checkpoint import save_checkpoint
    from deepaf_focus.model import build_model

    root = tmp_path_factory.mktemp("models")
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = build_model(init_features=4, patch_size=32, profile="20x")
        paths.append(
            save_checkpoint(root / f"m{seed}.pt", model, train_protocols=["lab_a_standard"])
        )
    return paths[0], paths[1]


def _header(store, sec: int):
    return store.types["std_msgs/msg/Header"](
        store.types["builtin_interfaces/msg/Time"](sec, 0), "cam"
    )


def _image(store, rgb: np.ndarray, sec: int):
    h, w = rgb.shape[:2]
    return store.types["sensor_msgs/msg/Image"](
        _header(store, sec), h, w, "rgb8", 0, w * 3, rgb.reshape(-1)
    )


def _joint(store, pose, sec: int):
    return store.types["sensor_msgs/msg/JointState"](
        _header(store, sec),
        ["stage_x", "stage_y", "focus_z"],
        np.array(pose, float),
        np.zeros(0),
        np.zeros(0),
    )


def _images(n: int, size: int = 96) -> list[np.ndarray]:
    from deepaf_focus.synthetic import render, texture

    rng = np.random.default_rng(5)
    return [render(texture(rng, size), d) for d in np.linspace(-3, 3, n)]


@pytest.fixture(scope="module")
def scope():
    from deepaf_driver.sim import VirtualMicroscope

    return VirtualMicroscope(profile="20x", protocol="lab_a_standard", slide_seed=3)


@pytest.fixture(scope="module")
def sim_bag(tmp_path_factory, scope, models) -> Path:
    """Previews at known poses on the simulator, plus the first model's predictions."""
    from deepaf_focus.predictor import FocusPredictor

    store = deepaf_typestore()
    predictor = FocusPredictor.from_checkpoint(models[0], profile="20x", num_threads=1)
    pred_type = store.types["deepaf_msgs/msg/FocusPrediction"]
    path = tmp_path_factory.mktemp("bags") / "sim"
    with BagWriter(path, SIM) as writer:
        writer.add_topic("/m/joint_states", "sensor_msgs/msg/JointState")
        writer.add_topic("/m/camera/image_raw", "sensor_msgs/msg/Image", make_qos(False))
        writer.add_topic("/m/focus/prediction", "deepaf_msgs/msg/FocusPrediction")
        for i, (rgb, (x, y, _), dz) in enumerate(zip(_images(3), POSES, DZ_UM, strict=True)):
            z = float(scope.best_focus_z(x, y)) + dz * 1e-6
            t = (10 + i) * 10**9
            writer.write_msg("/m/joint_states", t, _joint(store, (x, y, z), 10 + i))
            writer.write_msg("/m/camera/image_raw", t + 10**6, _image(store, rgb, 10 + i))
            res = predictor.predict(rgb)
            assert res.ok, res.message
            writer.write_msg(
                "/m/focus/prediction",
                t + 2 * 10**6,
                pred_type(
                    _header(store, 10 + i),
                    0,
                    "",
                    res.offset_m,
                    res.confidence,
                    z,
                    z + res.offset_m,
                    np.asarray(res.patch_offsets_m, float),
                    res.tissue_fraction,
                    "m0",
                    0.0,
                    res.expected_error_m,
                ),
            )
    return path


def test_truth_from_simulator_and_pose_track(scope):
    store = deepaf_typestore()
    track = PoseTrack()
    assert track.at(5) is None
    for sec, z in ((1, 1e-6), (2, 2e-6), (3, 3e-6)):
        track.add(_joint(store, (0.01, 0.01, z), sec))
    assert track.at(2 * 10**9)[2] == 2e-6  # stamped at the image
    assert track.at(2 * 10**9 + 5)[2] == 2e-6  # last before the image
    assert track.at(0)[2] == 1e-6  # before the first: the first
    truth = truth_source(SIM, "20x")
    assert truth.name == "simulator"
    assert truth.best_z(0.01, 0.012) == pytest.approx(float(scope.best_focus_z(0.01, 0.012)))
    assert truth_source({"best_focus_z_m": "1e-5"}, "20x").best_z(0, 0) == 1e-5
    assert truth_source({"namespace": "/m"}, "20x") is None


def test_eval_json_layout_labels_and_recorded(sim_bag, models, tmp_path):
    from deepaf_focus.evaluate import KEYS
    from deepaf_focus.predictor import FocusPredictor

    out = tmp_path / "eval.json"
    report = evaluate_bag(sim_bag, models=[models[0]], json_path=out, threads=1)
    assert json.loads(out.read_text()) == report
    assert list(report)[:3] == ["splits", "model", "data"]  # ./deepaf eval's layout
    assert report["model"] == str(models[0]) and report["data"] == [str(sim_bag)]
    assert list(report["splits"]) == ["same protocol"]  # trained on lab_a_standard
    metrics = report["splits"]["same protocol"]
    assert tuple(metrics) == KEYS
    assert metrics["n"] == 3
    # labels are best_focus_z - z from the simulator: -dz
    predictor = FocusPredictor.from_checkpoint(models[0], profile="20x", num_threads=1)
    pred = np.array([predictor.predict(rgb).offset_m * 1e6 for rgb in _images(3)])
    err = np.abs(pred - (-np.array(DZ_UM)))
    assert metrics["fe_um_mean"] == pytest.approx(err.mean(), abs=1e-6)
    assert report["ground_truth"] == "simulator"
    assert report["previews"] == 3 and report["throughput_pps"] > 0
    assert report["recorded"]["matched"] == 3
    assert report["recorded"]["max_abs_diff_um"] == pytest.approx(0.0, abs=1e-6)


def test_eval_compares_two_models_from_the_command_line(sim_bag, models, tmp_path, capsys):
    out = tmp_path / "two.json"
    argv = [
        "eval",
        str(sim_bag),
        "--model",
        str(models[0]),
        "--model",
        str(models[1]),
        "--threads",
        "1",
    ]
    assert bag_main([*argv, "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "previews/s" in text and "| same protocol |" in text
    report = json.loads(out.read_text())
    assert [m["model"] for m in report["models"]] == [str(models[0]), str(models[1])]
    assert report["models"][0]["splits"] == report["splits"]
    a, b = (m["splits"]["same protocol"]["fe_um_mean"] for m in report["models"])
    assert a != b  # two different networks on the same previews


def test_eval_without_previews_or_truth(tmp_path, models):
    store = deepaf_typestore()
    bag = tmp_path / "joints"
    with BagWriter(bag, {"namespace": "/m"}) as writer:
        writer.add_topic("/m/joint_states", "sensor_msgs/msg/JointState")
        writer.write_msg("/m/joint_states", 1, _joint(store, (0, 0, 0), 1))
    with pytest.raises(BagError, match=r"joints: no preview topic \(\*/camera/image_raw\)"):
        evaluate_bag(bag, models=[models[0]], threads=1)
    bag = tmp_path / "no_truth"
    with BagWriter(bag, {"namespace": "/m"}) as writer:
        writer.add_topic("/m/camera/image_raw", "sensor_msgs/msg/Image")
        writer.write_msg("/m/camera/image_raw", 1, _image(store, _images(1)[0], 1))
    report = evaluate_bag(bag, models=[models[0]], threads=1)
    assert report["splits"] == {} and report["ground_truth"] is None
    assert report["previews"] == 1


def _stack_bag(path: Path, scope, info: dict, compressed: bool) -> tuple[Path, float]:
    from deepaf.bags.images import compress_image

    store = deepaf_typestore()
    x, y = 0.0105, 0.0121
    best = float(scope.best_focus_z(x, y))
    topic = "/m/camera/image_full" + ("/compressed" if compressed else "")
    msgtype = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    with BagWriter(path, info) as writer:
        writer.add_topic("/m/joint_states", "sensor_msgs/msg/JointState")
        writer.add_topic(topic, msgtype)
        for i, (rgb, dz) in enumerate(zip(_images(5, 64), (-2, -1, 0, 1, 2), strict=True)):
            t = (20 + i) * 10**9
            writer.write_msg("/m/joint_states", t, _joint(store, (x, y, best + dz * 1e-6), 20 + i))
            msg = _image(store, rgb, 20 + i)
            writer.write_msg(topic, t + 1000, compress_image(msg, store) if compressed else msg)
    return path, best


def test_to_dataset_simulator_truth_reads_as_training_data(tmp_path, scope):
    from deepaf_focus.data import read_dataset

    bag, best = _stack_bag(tmp_path / "stack", scope, SIM, compressed=True)
    assert bag_main(["to-dataset", str(bag), "--out", str(tmp_path / "ds")]) == 0
    records = read_dataset([tmp_path / "ds"])
    assert len(records) == 5
    assert sorted(r.label_um for r in records) == pytest.approx([-2, -1, 0, 1, 2], abs=1e-6)
    meta = json.loads((tmp_path / "ds" / "stack_00000" / "meta.json").read_text())
    assert meta["best_focus_z_m"] == pytest.approx(best)
    assert meta["best_focus_source"] == "simulator"
    assert meta["protocol"] == "lab_a_standard" and meta["slide"] == "sim:seed=3"
    assert sorted(i["file"] for i in meta["images"])[0] == "z_+0000.000um.png"
    with pytest.raises(BagError, match="ds: exists and is not empty"):
        bag_to_dataset(bag, tmp_path / "ds")


def test_to_dataset_without_truth_uses_sharpness_peak(tmp_path, scope):
    bag, _ = _stack_bag(tmp_path / "stack", scope, {"namespace": "/m"}, compressed=False)
    summary = bag_to_dataset(bag, tmp_path / "ds", crop=32)
    assert summary == {
        "stacks": 1,
        "images": 5,
        "skipped_no_pose": 0,
        "topic": "/m/camera/image_full",
        "best_focus_source": "sharpness_peak",
    }
    zs = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    assert sharpness_peak(zs, -((zs - 0.3) ** 2)) == pytest.approx(0.3)
    assert sharpness_peak(zs, zs) == 2.0  # peak at the edge: no extrapolation
