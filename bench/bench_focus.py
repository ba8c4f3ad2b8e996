"""Benchmark the DeepAf focus model on this machine (``./deepaf bench focus``).

Measures:

* the focus decision from one 1280x720 preview with the shipped model: tissue check, tile
  selection, inference on the tiles, median (median and p95 over repeats), in this process;
* the same decision as the planner gets it (`--no-action` skips it): a PredictFocus goal
  carrying the preview (rgb8, 2.7 MB) sent to the real focus server node, in its own
  process, over DDS; timed from sending the goal to holding its result (goal and result
  transfer, the server's image conversion and the prediction), with the server's own
  compute time (`FocusPrediction.inference_time`) beside it;
* the paper configuration (init_features 32, 224x224 tiles): one tile and one decision;
* training throughput (samples/s) of the shipped configuration (forward + backward + Adam,
  batch 32, augmentation included).

The preview comes from the virtual microscope when ``deepaf_driver.sim`` is importable,
otherwise from a synthetic texture. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from deepaf_focus.data import AugmentConfig, augment_batch
from deepaf_focus.model import DeepAfConfig, build_model, count_parameters
from deepaf_focus.predictor import FocusPredictor, default_model_path
from deepaf_focus.train import load_config

CONFIG_DIR = Path(__file__).resolve().parents[1] / "src" / "deepaf_focus" / "config"


def _preview(profile: str) -> tuple[np.ndarray, str]:
    """A 1280x720 uint8 preview with tissue, 3 um (or 3 DoF at 4x) from focus."""
    try:
        from deepaf_driver.sim import VirtualMicroscope

        scope = VirtualMicroscope(profile, "lab_a_standard", slide_seed=7)
        x, y = scope.random_tissue_position(np.random.default_rng(7))
        dz = 3e-6 if profile == "20x" else 150e-6
        return scope.preview(x, y, float(scope.best_focus_z(x, y)) + dz), "virtual microscope"
    except Exception:  # the simulator is optional for this benchmark
        from deepaf_focus.synthetic import render, texture

        tex = texture(np.random.default_rng(0), 720)
        img = render(np.tile(tex, (1, 2, 1))[:, :1280], 3.0)
        return img, "synthetic texture"


def _time(fn, repeats: int, warmup: int = 3) -> np.ndarray:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e3)
    return np.asarray(out)


def _over_action(
    profile: str, model: str | None, max_patches: int, preview: np.ndarray, repeats: int
) -> dict[str, float]:
    """The decision over the PredictFocus action, as the planner gets it: the focus server
    node (`deepaf.runner.GraphRunner`, the graph's own process and parameters) and a client
    in this process sending the preview in the goal. Returns milliseconds."""
    import rclpy
    from deepaf.client import DeepAfClient
    from deepaf.runner import GraphRunner
    from deepaf_driver.conversions import image_to_msg

    focus = {"max_patches": max_patches, **({"model": str(model)} if model else {})}
    ns = f"bench_focus_{os.getpid()}"
    rclpy.init()
    try:
        with GraphRunner(ns, overrides={"profile": profile}, node_overrides={"focus": focus},
                         nodes=["focus"]):  # fmt: skip
            client = DeepAfClient(ns, server_timeout=120.0)
            msg = image_to_msg(
                np.ascontiguousarray(preview), client.node.get_clock().now().to_msg(), "camera"
            )
            wall, server = [], []
            for i in range(repeats + 3):  # 3 warm-up goals (discovery, first inference)
                t0 = time.perf_counter()
                outcome = client.predict_focus(image=msg, focus_z=0.0, timeout=120.0)
                dt = (time.perf_counter() - t0) * 1e3
                if not outcome.ok:
                    raise RuntimeError(f"PredictFocus failed: {outcome.message}")
                if i >= 3:
                    wall.append(dt)
                    server.append(outcome.result.prediction.inference_time * 1e3)
            client.close()
    finally:
        rclpy.try_shutdown()
    return {
        "action_decision_ms_median": float(np.median(wall)),
        "action_decision_ms_p95": float(np.percentile(wall, 95)),
        "action_server_compute_ms_median": float(np.median(server)),
        "action_overhead_ms_median": float(np.median(np.subtract(wall, server))),
        "action_goal_image_bytes": len(msg.data),
    }


def _train_throughput(cfg_model: dict, steps: int, batch: int = 32) -> float:
    cfg = DeepAfConfig.from_dict(cfg_model)
    model = build_model(cfg).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    p = cfg.patch_size
    x = torch.rand(batch, 3, p + 16, p + 16)
    y = torch.randn(batch)
    gen = torch.Generator().manual_seed(0)
    aug = AugmentConfig()

    def step() -> None:
        xb = augment_batch(x, aug, gen, crop=p)
        loss = torch.nn.functional.smooth_l1_loss(model(xb), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    ms = _time(step, steps, warmup=1)
    return batch / (np.median(ms) / 1e3)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print a rich table and, last, one JSON line."""
    ap = argparse.ArgumentParser(prog="deepaf bench focus", description=__doc__.split("\n")[0])
    ap.add_argument("--profile", choices=["20x", "4x"], default="20x", help="shipped model")
    ap.add_argument("--model", help="checkpoint (default: the shipped model of --profile)")
    ap.add_argument("--repeats", type=int, default=50, help="timed focus decisions")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1, as the focus server runs)",
    )
    ap.add_argument("--max-patches", type=int, default=8, help="tiles per decision")
    ap.add_argument("--quick", action="store_true", help="fewer repeats (smoke test)")
    ap.add_argument(
        "--no-action", action="store_true", help="skip the PredictFocus-over-DDS measurement"
    )
    args = ap.parse_args(argv)
    repeats = 5 if args.quick else args.repeats
    preview, source = _preview(args.profile)
    torch.set_num_threads(max(1, args.threads))  # after the simulator, which may change it
    try:
        path = Path(args.model) if args.model else default_model_path(args.profile)
        predictor = FocusPredictor.from_checkpoint(path, max_patches=args.max_patches)
        model_name = str(path)
    except FileNotFoundError:
        cfg = load_config(CONFIG_DIR / f"shipped_{args.profile}.yaml").model
        predictor = FocusPredictor(build_model(cfg), max_patches=args.max_patches)
        model_name = f"untrained shipped_{args.profile} config (no weights found)"
    res = predictor.predict(preview)
    with torch.inference_mode():
        decision = _time(lambda: predictor.predict(preview), repeats)

    action = (
        {}
        if args.no_action
        else _over_action(args.profile, args.model, args.max_patches, preview, repeats)
    )

    paper = build_model(DeepAfConfig()).eval()
    tile = torch.rand(1, 3, 224, 224)
    tiles = torch.rand(args.max_patches, 3, 224, 224)
    with torch.inference_mode():
        paper_tile = _time(lambda: paper(tile), 2 if args.quick else 10, warmup=1)
        paper_decision = _time(lambda: paper(tiles), 1 if args.quick else 3, warmup=1)

    shipped_cfg = load_config(CONFIG_DIR / f"shipped_{args.profile}.yaml").model
    train_sps = _train_throughput(shipped_cfg, 2 if args.quick else 5)
    paper_sps = _train_throughput(DeepAfConfig().to_dict(), 1, batch=8 if args.quick else 32)

    result = {
        "focus_decision_ms_median": float(np.median(decision)),
        "focus_decision_ms_p95": float(np.percentile(decision, 95)),
        "focus_decision_tiles": len(res.patch_offsets_m),
        "focus_decision_status": res.status,
        **action,
        "shipped_model": model_name,
        "shipped_params": count_parameters(predictor.model),
        "preview": f"1280x720 from {source}",
        "paper_params": count_parameters(paper),
        "paper_tile_ms_median": float(np.median(paper_tile)),
        "paper_decision_ms_median": float(np.median(paper_decision)),
        "train_samples_per_s_shipped": float(train_sps),
        "train_samples_per_s_paper": float(paper_sps),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "target_ms": 50.0,
    }
    try:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"DeepAf focus benchmark ({os.cpu_count()} CPU cores)")
        table.add_column("measurement")
        table.add_column("value", justify="right")
        rows = [
            ("shipped model", f"{model_name} ({result['shipped_params']:,} params)"),
            ("preview", result["preview"]),
            ("focus decision median (ms)", f"{result['focus_decision_ms_median']:.1f}"),
            ("focus decision p95 (ms)", f"{result['focus_decision_ms_p95']:.1f}"),
            ("tiles per decision", str(result["focus_decision_tiles"])),
            *(
                [
                    (
                        "over PredictFocus (DDS), median / p95 (ms)",
                        f"{action['action_decision_ms_median']:.1f} / "
                        f"{action['action_decision_ms_p95']:.1f}",
                    ),
                    (
                        "  of which the server's compute / the rest (ms)",
                        f"{action['action_server_compute_ms_median']:.1f} / "
                        f"{action['action_overhead_ms_median']:.1f}",
                    ),
                ]
                if action
                else []
            ),
            ("paper config: one 224 tile (ms)", f"{result['paper_tile_ms_median']:.1f}"),
            (
                f"paper config: {args.max_patches} tiles (ms)",
                f"{result['paper_decision_ms_median']:.1f}",
            ),
            ("training, shipped config (samples/s)", f"{train_sps:.1f}"),
            ("training, paper config (samples/s)", f"{paper_sps:.2f}"),
            ("CPU cores / torch threads", f"{os.cpu_count()} / {torch.get_num_threads()}"),
        ]
        for k, v in rows:
            table.add_row(k, v)
        Console().print(table)
    except ImportError:
        pass
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
