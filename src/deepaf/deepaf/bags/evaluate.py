"""Offline evaluation of focus models on a recorded bag (`./deepaf bag eval`).

Every preview of the bag is decoded once and given to each model (streaming: one decoded
image at a time, the reader one storage chunk at a time). With ground truth (see
:mod:`.truth`) the report holds FE / FD / DoF per split exactly as `./deepaf eval` writes
them (``deepaf_focus.metrics.focus_metrics``, splits by ``deepaf_focus.evaluate``'s rules);
predictions the bag recorded on `focus/prediction` are compared with the first model's.

JSON layout: the first model's ``{"splits": {...}, "model": .., "data": [bag]}`` as
`./deepaf eval`, plus ``"models"`` (one entry per model, same keys, for comparisons),
``"throughput_pps"`` (read + decode + every model; each entry has its ``"model_pps"``),
``"previews"``, ``"ground_truth"`` and ``"recorded"`` (agreement with the bag's predictions).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BagError
from .images import IMAGE_TYPES, decode_image
from .reader import BagReader
from .truth import PoseTrack, stamp_ns, truth_source

__all__ = ["evaluate_bag", "print_report"]

PREVIEW_TOPIC = "camera/image_raw"
PREDICTION_TYPE = "deepaf_msgs/msg/FocusPrediction"


def _split(protocol: str, profile: str, train_protocols: Sequence[str] | None) -> str:
    """Split name of the bag's previews, by ./deepaf eval's rules."""
    from deepaf_focus.data import FocusRecord
    from deepaf_focus.evaluate import assign_splits

    record = FocusRecord(Path("."), 0.0, "bag", "bag", protocol, profile)
    return assign_splits([record], train_protocols)[0]


def evaluate_bag(
    bag: str | Path,
    models: Sequence[str | Path | None] = (None,),
    json_path: str | Path | None = None,
    topic: str | None = None,
    profile: str | None = None,
    max_patches: int = 8,
    device: str = "cpu",
    threads: int | None = None,
) -> dict[str, Any]:
    """Run each model on every preview of `bag`; return (and optionally write) the report.

    Args:
        bag: Bag directory.
        models: Checkpoints (None: the shipped model for the profile).
        json_path: Where to write the JSON report.
        topic: Preview topic (default: the bag's `*/camera/image_raw`).
        profile: Microscope profile (default: the bag's, else 20x).
        max_patches: Tiles per preview.
        device: Torch device.
        threads: Torch CPU threads (None: torch's default). On a loaded machine 1 is fastest.

    Raises:
        BagError: unreadable bag, no preview topic, undecodable messages.
        FileNotFoundError, ValueError: unreadable models.
    """
    from deepaf_focus.metrics import focus_metrics, half_dof_um
    from deepaf_focus.predictor import FocusPredictor

    with BagReader(bag) as reader:
        info = reader.info
        profile = profile or str(info.get("profile") or "20x")
        if topic:
            preview = reader.check_topics([topic])[0]
        else:
            preview = reader.find_topic(PREVIEW_TOPIC, IMAGE_TYPES)
        if preview is None:
            raise BagError(
                reader.path,
                f"no preview topic (*/{PREVIEW_TOPIC}) in the bag; it has "
                f"{', '.join(sorted(reader.topics)) or 'no topics'}; pass --topic",
            )
        joints = reader.find_topic("joint_states", ["sensor_msgs/msg/JointState"])
        recorded_topic = reader.find_topic("focus/prediction", [PREDICTION_TYPE])
        truth = truth_source(info, profile) if joints else None
        predictors = [
            FocusPredictor.from_checkpoint(
                m, profile=profile, device=device, max_patches=max_patches, num_threads=threads
            )
            for m in models
        ]
        protocol = str(info.get("protocol") or "unknown")
        splits = [
            _split(protocol, profile, p.checkpoint.get("train_protocols")) for p in predictors
        ]
        half = half_dof_um(profile)

        track = PoseTrack()
        true_um: list[list[float]] = [[] for _ in predictors]
        pred_um: list[list[float]] = [[] for _ in predictors]
        ours: dict[int, float] = {}
        recorded: dict[int, float] = {}
        skipped = [defaultdict(int) for _ in predictors]
        model_s = [0.0] * len(predictors)
        previews = 0
        start = time.perf_counter()
        wanted = [t for t in (preview, joints, recorded_topic) if t]
        for msg in reader.messages(wanted):
            if msg.topic == joints:
                track.add(reader.deserialize(msg))
                continue
            if msg.topic == recorded_topic:
                rec = reader.deserialize(msg)
                if int(rec.status) == 0:
                    recorded[stamp_ns(rec.header)] = float(rec.offset) * 1e6
                continue
            img_msg = reader.deserialize(msg)
            t_img = stamp_ns(img_msg.header)
            try:
                rgb = decode_image(img_msg, msg.msgtype)
            except ValueError as exc:
                raise BagError(reader.path, f"preview at {msg.timestamp_ns} ns: {exc}") from exc
            previews += 1
            pose = track.at(t_img) if truth else None
            label = None if pose is None else (truth.best_z(pose[0], pose[1]) - pose[2]) * 1e6
            for k, predictor in enumerate(predictors):
                t0 = time.perf_counter()
                res = predictor.predict(rgb)
                model_s[k] += time.perf_counter() - t0
                if res.status != "ok":
                    skipped[k][res.status] += 1
                    continue
                if k == 0:
                    ours[t_img] = res.offset_m * 1e6
                if label is not None:
                    true_um[k].append(label)
                    pred_um[k].append(res.offset_m * 1e6)
            del rgb, img_msg
        wall = time.perf_counter() - start

    entries = []
    for k, predictor in enumerate(predictors):
        entry: dict[str, Any] = {
            "splits": {splits[k]: focus_metrics(pred_um[k], true_um[k], half)} if truth else {},
            "model": str(getattr(predictor, "path", models[k])),
            "data": [str(bag)],
            "model_pps": round(previews / model_s[k], 2) if model_s[k] > 0 else None,
        }
        if skipped[k]:
            entry["skipped"] = dict(skipped[k])
        entries.append(entry)
    matched = sorted(set(ours) & set(recorded))
    diffs = np.abs([ours[t] - recorded[t] for t in matched]) if matched else np.zeros(0)
    report: dict[str, Any] = {
        **entries[0],
        "models": entries,
        "profile": profile,
        "topic": preview,
        "previews": previews,
        "throughput_pps": round(previews / wall, 2) if wall > 0 else None,
        "ground_truth": truth.name if truth else None,
        "recorded": {
            "topic": recorded_topic,
            "predictions": len(recorded),
            "matched": len(matched),
            "max_abs_diff_um": float(diffs.max()) if len(diffs) else None,
        },
    }
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=2) + "\n")
    return report


def print_report(report: dict[str, Any]) -> None:
    """Print the report: an FE / FD / DoF table per model, throughput, recorded agreement."""
    from deepaf_focus.evaluate import markdown_table

    print(
        f"bag {report['data'][0]}: {report['previews']} previews on {report['topic']}, "
        f"ground truth: {report['ground_truth'] or 'none (predictions only)'}"
    )
    for entry in report["models"]:
        print(f"\nmodel {entry['model']}: {entry['model_pps']} previews/s (model only)")
        if entry["splits"]:
            print(markdown_table(entry["splits"]))
        if entry.get("skipped"):
            print(f"skipped: {entry['skipped']}")
    rec = report["recorded"]
    if rec["matched"]:
        print(
            f"\nrecorded predictions ({rec['topic']}): {rec['matched']} matched, max |diff| "
            f"{rec['max_abs_diff_um']:.4f} um vs the first model"
        )
    print(f"\nthroughput: {report['throughput_pps']} previews/s (read + decode + every model)")
