"""Bag I/O without ROS nodes: type hashes, metadata, interoperability, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from deepaf.bags import BagError, BagReader, BagWriter, make_qos
from deepaf.bags.typestore import deepaf_typestore, interface_dir, message_types
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

PREDICTION = "deepaf_msgs/msg/FocusPrediction"
IMAGE = "sensor_msgs/msg/Image"


def _messages(store):
    """A few messages of a standard and a custom type: (topic, type, t_ns, object)."""
    image = store.types[IMAGE]
    header = store.types["std_msgs/msg/Header"]
    stamp = store.types["builtin_interfaces/msg/Time"]
    pred = store.types[PREDICTION]
    out = []
    for i in range(3):
        h = header(stamp(10 + i, 500), "cam")
        data = np.full(8 * 6 * 3, i, np.uint8)
        out.append(
            ("/m/camera/image_raw", IMAGE, 1_000 + i * 100, image(h, 6, 8, "rgb8", 0, 24, data))
        )
        p = pred(
            h, 0, "", i * 1e-6, 0.9, 0.0, i * 1e-6, np.array([i * 1e-6]), 0.5, "m", 0.01, 0.3e-6
        )
        out.append(("/m/focus/prediction", PREDICTION, 1_050 + i * 100, p))
    return out


def _write_project_bag(path: Path) -> Path:
    store = deepaf_typestore()
    with BagWriter(path, {"namespace": "/m", "profile": "20x"}) as writer:
        writer.add_topic("/m/camera/image_raw", IMAGE, make_qos(reliable=False))
        writer.add_topic("/m/focus/prediction", PREDICTION)
        for topic, _, t, msg in _messages(store):
            writer.write_msg(topic, t, msg)
    return path


def _write_plain_rosbags_bag(path: Path) -> Path:
    """The same messages written with rosbags alone (its own typestore from the .msg text)."""
    store = get_typestore(Stores.ROS2_KILTED)
    text = (interface_dir() / "msg" / "FocusPrediction.msg").read_text()
    store.register(get_types_from_msg(text, PREDICTION))
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = {
            "/m/camera/image_raw": writer.add_connection(
                "/m/camera/image_raw",
                IMAGE,
                typestore=store,
                offered_qos_profiles=[make_qos(reliable=False)],
            ),
            "/m/focus/prediction": writer.add_connection(
                "/m/focus/prediction",
                PREDICTION,
                typestore=store,
                offered_qos_profiles=[make_qos()],
            ),
        }
        for topic, msgtype, t, msg in _messages(store):
            writer.write(conns[topic], t, store.serialize_cdr(msg, msgtype))
    return path


def test_type_hashes_equal_rosidl():
    """Every deepaf_msgs type (messages, service and action parts) hashes as rosidl does."""
    store = deepaf_typestore()
    share = interface_dir()
    files = sorted(share.glob("*/*.json"))
    if not files:
        pytest.skip(f"no rosidl type description files in {share} (workspace not built)")
    checked = 0
    for path in files:
        for entry in json.loads(path.read_text())["type_hashes"]:
            name = entry["type_name"]
            if name.startswith("deepaf_msgs/") and name in store.types:
                assert store.hash_rihs01(name) == entry["hash_string"], f"{name} ({path})"
                checked += 1
    ours = set(message_types())
    assert checked >= len(ours), f"only {checked} of {len(ours)} types compared"


def test_metadata_yaml_and_type_hashes(tmp_path):
    bag = _write_project_bag(tmp_path / "bag")
    meta = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["version"] == 9
    assert meta["storage_identifier"] == "mcap"
    assert meta["relative_file_paths"] == ["bag.mcap"]
    assert meta["message_count"] == 6
    assert meta["custom_data"] == {"deepaf.namespace": "/m", "deepaf.profile": "20x"}
    topics = {t["topic_metadata"]["name"]: t for t in meta["topics_with_message_count"]}
    pred = topics["/m/focus/prediction"]
    assert pred["message_count"] == 3
    assert pred["topic_metadata"]["type"] == PREDICTION
    assert pred["topic_metadata"]["serialization_format"] == "cdr"
    assert (
        topics["/m/camera/image_raw"]["topic_metadata"]["offered_qos_profiles"][0]["reliability"]
        == "best_effort"
    )
    share = interface_dir() / "msg" / "FocusPrediction.json"
    if share.is_file():
        rosidl = {
            h["type_name"]: h["hash_string"] for h in json.loads(share.read_text())["type_hashes"]
        }
        assert pred["topic_metadata"]["type_description_hash"] == rosidl[PREDICTION]
    assert json.loads((bag / "deepaf.json").read_text()) == {"namespace": "/m", "profile": "20x"}


def test_mcap_schemas_carry_definitions(tmp_path):
    """An independent reader (the mcap library) sees ros2msg schemas with our definition."""
    from mcap.reader import make_reader

    bag = _write_project_bag(tmp_path / "bag")
    with (bag / "bag.mcap").open("rb") as f:
        reader = make_reader(f)
        summary = reader.get_summary()
        schemas = {s.name: s for s in summary.schemas.values()}
        assert set(schemas) == {IMAGE, PREDICTION}
        assert schemas[PREDICTION].encoding == "ros2msg"
        assert b"float64 offset" in schemas[PREDICTION].data
        assert b"MSG: std_msgs/Header" in schemas[PREDICTION].data
        channels = {c.topic: c for c in summary.channels.values()}
        assert channels["/m/focus/prediction"].message_encoding == "cdr"
        assert sum(1 for _ in reader.iter_messages()) == 6


def test_rosbags_and_project_bags_read_back_identically(tmp_path):
    ours = _write_project_bag(tmp_path / "ours")
    plain = _write_plain_rosbags_bag(tmp_path / "plain")
    with BagReader(ours) as a, BagReader(plain) as b:
        assert {t: (i.msgtype, i.count, i.type_hash) for t, i in a.topics.items()} == {
            t: (i.msgtype, i.count, i.type_hash) for t, i in b.topics.items()
        }
        msgs_a, msgs_b = list(a.messages()), list(b.messages())
        assert msgs_a == msgs_b
        assert len(msgs_a) == 6
        assert [m.timestamp_ns for m in msgs_a] == sorted(m.timestamp_ns for m in msgs_a)
        image = a.deserialize(msgs_a[0])
        assert (image.width, image.height, int(image.data[0])) == (8, 6, 0)
        pred = b.deserialize(msgs_b[-1])
        assert pred.offset == pytest.approx(2e-6)
        assert b.info == {}  # a plain rosbags bag has no DeepAf context
        assert a.info == {"namespace": "/m", "profile": "20x"}


def test_topic_selection_and_missing_topic(tmp_path):
    bag = _write_project_bag(tmp_path / "bag")
    with BagReader(bag) as reader:
        assert reader.find_topic("camera/image_raw") == "/m/camera/image_raw"
        assert reader.find_topic("joint_states") is None
        only = list(reader.messages(["/m/focus/prediction"]))
        assert [m.topic for m in only] == ["/m/focus/prediction"] * 3
        with pytest.raises(BagError, match=r"bag: topic\(s\) /nope not in the bag; it has /m/"):
            list(reader.messages(["/nope"]))


def test_writer_refuses_unknown_type_and_existing_dir(tmp_path):
    with (
        BagWriter(tmp_path / "bag") as writer,
        pytest.raises(BagError, match="unknown message type foo_msgs/msg/Bar on /x"),
    ):
        writer.add_topic("/x", "foo_msgs/msg/Bar")
    with pytest.raises(BagError, match="exists already"):
        BagWriter(tmp_path / "bag")


def _run_info(bag: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "deepaf.bag_command", "info", str(bag)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_truncated_bag_clear_error_no_hang(tmp_path):
    bag = _write_project_bag(tmp_path / "bag")
    mcap = bag / "bag.mcap"
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])
    with pytest.raises(BagError, match=r"bag\.mcap: truncated or corrupt storage file"):
        BagReader(bag)
    result = _run_info(bag)  # the command line: one line, exit 1, bounded time
    assert result.returncode == 1
    assert "bag.mcap: truncated or corrupt" in result.stderr
    assert "Traceback" not in result.stderr


def test_corrupt_chunk_clear_error(tmp_path):
    bag = _write_project_bag(tmp_path / "bag")
    mcap = bag / "bag.mcap"
    data = bytearray(mcap.read_bytes())
    start = data.index(b"rgb8")  # inside the first chunk: overwrite message bytes
    data[start - 200 : start + 200] = b"\xff" * 400
    mcap.write_bytes(bytes(data))
    with pytest.raises(BagError, match=r"bag\.mcap: "), BagReader(bag) as reader:
        for msg in reader.messages():
            reader.deserialize(msg)


def test_missing_metadata_and_not_a_bag(tmp_path):
    bag = _write_project_bag(tmp_path / "bag")
    (bag / "metadata.yaml").unlink()
    with pytest.raises(BagError, match=r"metadata\.yaml: missing"):
        BagReader(bag)
    with pytest.raises(BagError, match="no such bag directory"):
        BagReader(tmp_path / "nothing")
    result = _run_info(tmp_path / "nothing")
    assert result.returncode == 1 and "nothing: no such bag directory" in result.stderr


def test_unknown_message_type_clear_error(tmp_path):
    """A bag recorded elsewhere with a type this install lacks: reading names it."""
    store = get_typestore(Stores.ROS2_KILTED)
    store.register(get_types_from_msg("float64 level\n", "lab_msgs/msg/Lamp"))
    with Writer(tmp_path / "bag", version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection("/lamp", "lab_msgs/msg/Lamp", typestore=store)
        lamp = store.types["lab_msgs/msg/Lamp"](0.5)
        writer.write(conn, 1, store.serialize_cdr(lamp, "lab_msgs/msg/Lamp"))
    with BagReader(tmp_path / "bag") as reader:
        (msg,) = list(reader.messages())
        with pytest.raises(BagError, match="unknown message type lab_msgs/msg/Lamp on /lamp"):
            reader.deserialize(msg)


def test_bag_command_help():
    for sub in ("record", "play", "info", "eval", "to-dataset"):
        result = subprocess.run(
            [sys.executable, "-m", "deepaf.bag_command", sub, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert f"deepaf bag {sub}" in result.stdout


def test_bad_metadata_names_metadata_yaml(tmp_path):
    bag = _write_project_bag(tmp_path / "bag")
    (bag / "metadata.yaml").write_text("rosbag2_bagfile_information: {version: 9}\n")
    with pytest.raises(BagError, match=r"metadata\.yaml: invalid \(A metadata key is missing"):
        BagReader(bag)


def test_sqlite3_bag_from_elsewhere_reads(tmp_path):
    """Bags recorded by `ros2 bag record` with the sqlite3 storage read too."""
    store = get_typestore(Stores.ROS2_KILTED)
    with Writer(tmp_path / "db", version=8, storage_plugin=StoragePlugin.SQLITE3) as writer:
        conn = writer.add_connection(
            "/m/joint_states", "sensor_msgs/msg/JointState", typestore=store
        )
        header = store.types["std_msgs/msg/Header"](
            store.types["builtin_interfaces/msg/Time"](1, 2), ""
        )
        msg = store.types["sensor_msgs/msg/JointState"](
            header, ["focus_z"], np.array([3e-6]), np.zeros(0), np.zeros(0)
        )
        writer.write(conn, 5, store.serialize_cdr(msg, "sensor_msgs/msg/JointState"))
    with BagReader(tmp_path / "db") as reader:
        (only,) = list(reader.messages())
        assert reader.deserialize(only).position[0] == 3e-6
        assert reader.find_topic("joint_states") == "/m/joint_states"


def test_reading_streams_one_chunk_at_a_time(tmp_path):
    """Reading and decoding every image of a bag never holds more than a few images."""
    import tracemalloc

    from deepaf.bags.images import decode_image

    store = deepaf_typestore()
    image = store.types[IMAGE]
    header = store.types["std_msgs/msg/Header"](
        store.types["builtin_interfaces/msg/Time"](0, 0), ""
    )
    frame = np.random.default_rng(0).integers(0, 255, 512 * 512 * 3, dtype=np.uint8)
    with BagWriter(tmp_path / "big") as writer:
        writer.add_topic("/m/camera/image_raw", IMAGE)
        for i in range(48):
            writer.write_msg(
                "/m/camera/image_raw", i, image(header, 512, 512, "rgb8", 0, 1536, frame)
            )
    one = frame.nbytes
    tracemalloc.start()
    try:
        with BagReader(tmp_path / "big") as reader:
            n = 0
            for msg in reader.messages():
                rgb = decode_image(reader.deserialize(msg), msg.msgtype)
                n += int(rgb.shape[0] == 512)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == 48
    # a chunk holds ~2 of these images; the reader copies it twice, decoding adds one image
    assert peak < 12 * one, f"peak {peak / 1e6:.1f} MB reading a 38 MB bag of 0.79 MB images"
