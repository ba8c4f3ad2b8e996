"""Command-line entry points: ``./deepaf train``, ``./deepaf eval``, ``./deepaf predict``.

Each ``*_main(argv)`` parses its own arguments and returns a process exit code (0 ok,
1 failed with a message on stderr, 2 bad usage), so the ``./deepaf`` wrapper and tests can
call them directly.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

__all__ = ["eval_main", "export_main", "predict_main", "train_main"]


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 1


def train_main(argv: list[str] | None = None) -> int:
    """``deepaf train``: train a focus model on focal-stack data."""
    p = argparse.ArgumentParser(prog="deepaf train", description="Train a DeepAf focus model.")
    p.add_argument(
        "--config",
        help="YAML training config (default: the paper's recipe, "
        "src/deepaf_focus/config/paper.yaml)",
    )
    p.add_argument(
        "--data",
        nargs="+",
        required=True,
        help="dataset folder(s): deepaf-focal-stack or Incoherent layout",
    )
    p.add_argument("--out", required=True, help="output folder for last.pt, best.pt, logs")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="torch device")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt if present")
    p.add_argument("--epochs", type=int, help="override the config's epochs")
    p.add_argument(
        "--max-minutes", type=float, help="stop resumably after this many minutes of training"
    )
    p.add_argument(
        "--variant",
        choices=["spatio_spectral", "spatial", "spectral"],
        help="override the config's network variant (ablations)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress output")
    args = p.parse_args(argv)
    from .train import load_config, train

    try:
        cfg = load_config(args.config)
        if args.epochs is not None:
            cfg.epochs = args.epochs
        if args.max_minutes is not None:
            cfg.max_minutes = args.max_minutes
        if args.variant is not None:
            cfg.model = {**cfg.model, "variant": args.variant}
        summary = train(cfg, args.data, args.out, args.device, args.resume, not args.quiet)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        return _fail(str(exc))
    if os.environ.get("RANK", "0") != "0":
        return 0  # under torchrun only rank 0 reports
    print(
        f"done: {summary['epochs_done']} epochs, best validation FE "
        f"{summary['best_val_fe_um']:.3f} um, {summary['samples_per_s']:.1f} samples/s; "
        f"weights in {Path(args.out) / 'best.pt'}"
    )
    return 0


def eval_main(argv: list[str] | None = None) -> int:
    """``deepaf eval``: FE / FD / DoF per split, JSON report and Fig. 2 plot."""
    p = argparse.ArgumentParser(prog="deepaf eval", description="Evaluate a focus model.")
    p.add_argument("--model", help="checkpoint (default: the shipped model of the data's profile)")
    p.add_argument("--data", nargs="+", required=True, help="dataset folder(s) to evaluate on")
    p.add_argument("--json", help="write the report as JSON here")
    p.add_argument("--plot", help="write the error-vs-distance plot (PNG) here")
    p.add_argument(
        "--baselines",
        action="store_true",
        help="also run classical stack searches (golden-section, grid + fit)",
    )
    p.add_argument("--range-um", type=float, help="only images within this distance of focus")
    p.add_argument("--max-patches", type=int, default=8, help="tissue tiles per image")
    p.add_argument("--profile", choices=["20x", "4x"], help="profile (default: from the data)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="torch device")
    p.add_argument(
        "--fit-confidence",
        metavar="OUT.pt",
        help="fit the model's calibrated expected-error weights on --data (held-out data, never "
        "the training data) and write the checkpoint with them to OUT.pt",
    )
    p.add_argument(
        "--check",
        nargs="+",
        default=[],
        metavar="DIR",
        help="with --fit-confidence: datasets the reliability is checked on (one split each)",
    )
    p.add_argument("--reliability", help="with --fit-confidence: reliability plot (PNG)")
    args = p.parse_args(argv)
    from .evaluate import evaluate, markdown_table

    if args.fit_confidence:
        from .uncertainty import fit_confidence

        try:
            fit = fit_confidence(
                args.model,
                args.data,
                args.fit_confidence,
                {d.rstrip("/").split("/")[-1]: [d] for d in args.check},
                args.reliability,
                args.profile or "20x",
            )
        except (ValueError, FileNotFoundError) as exc:
            return _fail(str(exc))
        print(f"error model: {fit['error_model']}")
        for split, rows in fit["reliability"].items():
            pairs = ", ".join(f"{r['expected_um']:.2f}->{r['actual_um']:.2f}" for r in rows)
            print(f"{split}: expected->actual um per bin: {pairs}")
        print(f"wrote {args.fit_confidence}")
        return 0

    try:
        rep = evaluate(
            args.data,
            args.model,
            args.json,
            args.plot,
            args.baselines,
            args.range_um,
            args.max_patches,
            args.device,
            args.profile,
        )
    except (ValueError, FileNotFoundError) as exc:
        return _fail(str(exc))
    print(f"model: {rep['model']}")
    print(markdown_table(rep["splits"]))
    if rep.get("skipped"):
        print(f"\nskipped images: {rep['skipped']}")
    if rep.get("baselines"):
        print("\nClassical stack search (error of the found best focus):\n")
        print(markdown_table(rep["baselines"], "split: method"))
    return 0


def predict_main(argv: list[str] | None = None) -> int:
    """``deepaf predict IMAGE``: print the z move that focuses one image."""
    p = argparse.ArgumentParser(
        prog="deepaf predict", description="Predict the focus offset from one image."
    )
    p.add_argument("image", help="8-bit RGB image file (PNG/JPEG/TIFF)")
    p.add_argument("--model", help="checkpoint (default: shipped model for --profile)")
    p.add_argument("--profile", choices=["20x", "4x"], default="20x", help="microscope profile")
    p.add_argument("--max-patches", type=int, default=8, help="tissue tiles to evaluate")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = p.parse_args(argv)
    from .data import read_image
    from .predictor import FocusPredictor

    try:
        pred = FocusPredictor.from_checkpoint(
            args.model, profile=args.profile, max_patches=args.max_patches
        )
        res = pred.predict(read_image(args.image))
    except (ValueError, FileNotFoundError) as exc:
        return _fail(str(exc))
    if args.json:
        print(
            json.dumps(
                {
                    "status": res.status,
                    "offset_m": res.offset_m,
                    "confidence": res.confidence,
                    "patch_offsets_m": res.patch_offsets_m.tolist(),
                    "tissue_fraction": res.tissue_fraction,
                    "message": res.message,
                }
            )
        )
    else:
        print(f"status: {res.status}")
        print(f"offset: {res.offset_m * 1e6:+.3f} um (move z by this to focus)")
        print(f"confidence: {res.confidence:.2f}")
        print(f"tissue: {res.tissue_fraction:.1%}, tiles: {len(res.patch_offsets_m)}")
        print(f"message: {res.message}")
    return 0


def export_main(argv: list[str] | None = None) -> int:
    """``deepaf export``: TorchScript export with a parity check."""
    p = argparse.ArgumentParser(
        prog="deepaf export", description="Export a checkpoint to TorchScript."
    )
    p.add_argument("--model", help="checkpoint (default: shipped model for --profile)")
    p.add_argument("--profile", choices=["20x", "4x"], default="20x", help="microscope profile")
    p.add_argument("--out", required=True, help="output .ts file")
    args = p.parse_args(argv)
    from .export import export_torchscript
    from .predictor import default_model_path

    try:
        diff = export_torchscript(args.model or default_model_path(args.profile), args.out)
    except (ValueError, FileNotFoundError) as exc:
        return _fail(str(exc))
    print(f"wrote {args.out}; max abs difference to eager: {diff:.2e} um")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m deepaf_focus.cli {train,eval,predict,export} ...`` (used by torchrun)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {
        "train": train_main,
        "eval": eval_main,
        "predict": predict_main,
        "export": export_main,
    }
    if not argv or argv[0] not in commands:
        print(f"usage: python -m deepaf_focus.cli {{{','.join(commands)}}} ...", file=sys.stderr)
        return 2
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
