"""deepaf_focus: single-shot autofocus for brightfield slide scanning (ROS-free).

Modules:
    model       DeepAf network (spatio-spectral, spatial-only, spectral-only) and its config.
    ffc         Fast Fourier Convolution layers.
    tissue      The one tissue test (fields and tiles), shared with the planner.
    data        Focal-stack and Incoherent-dataset readers, splits, augmentations.
    train       ``./deepaf train``.
    evaluate    ``./deepaf eval`` (FE / FD / DoF per split, Fig. 2 plot, baselines).
    metrics     FE, FD and DoF as defined in the DeepAf paper.
    baselines   Classical focus measures and stack searches.
    predictor   ``FocusPredictor``: preview RGB -> signed z offset (m) + confidence.
    checkpoint  Safe (weights-only) checkpoints that rebuild their model.
    export      TorchScript export with a parity check.
    cli         Entry points of ``./deepaf train|eval|predict``.

Importing this package imports nothing heavy; import the submodule you need.
"""

__version__ = "0.1.0"
