"""Calibrating the PMT model: an offline job (numpy least squares over a survey file) that
writes a model file classify then loads (REGSOSEK_PMT_MODEL_FILE). It is not part of
classify's runtime: `python -m regsosek_tools.calibration --help`, and the module
docstring of `regsosek_tools.calibration.calibrate` for the method."""
