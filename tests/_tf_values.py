"""Random values for a TF 1.x graph's variables, for tests that compare a program with its port."""

import numpy as np


def load_random_values(session, variables) -> dict:
    """Set each of ``variables`` (a TF 1.x graph's, e.g. ``tf.global_variables()``) to standard
    normal values, seeded by its rank in name order so that every run draws the same ones, and
    return them by name (``dense/kernel``). Random values make bias and moving-statistic terms of a
    loss count too, where initial zeros and ones would hide them."""
    values = {}
    for i, v in enumerate(sorted(variables, key=lambda v: v.name)):
        value = np.random.RandomState(i).randn(*v.shape.as_list()).astype(np.float32)
        v.load(value, session)
        values[v.name[:-2]] = value
    return values
