"""Placeholder until the first fit."""

COEFFICIENTS = {
    "kps": {"a_eye": 0.0, "a_em": 0.0, "a_w": 1.0, "a_h": 0.0, "c_box": 1.0, "c_nose": 0.0, "c_0": 0.0, "d_box": 1.0, "d_0": 0.0},
    "box": {"f_w": 1.0, "f_h": 0.0, "f_x": 0.0, "f_y": 0.0},
}

FIT = {}
