"""How a multi-label cache stores its labels: each distinct label set is one class name.

A multi-label image's labels are kept as one canonical string, sorted and
without repeats, joined by `;` ("daisy;white"). The manifest's class_names list
those sets and every row's label indexes them, so shards, resume, merge and
repair treat a multi-label cache as any other; the manifest's
`source.multi_label` marks it. These helpers turn the sets into the label
vocabulary and the 0/1 indicator matrix heads train on.
"""

from __future__ import annotations

import numpy as np

SEPARATOR = ";"


def label_set(cell: str) -> str:
    """The canonical form of a label cell: its labels sorted, without repeats or blanks."""
    return SEPARATOR.join(sorted({part.strip() for part in cell.split(SEPARATOR) if part.strip()}))


def labels_of(label_set_text: str) -> list[str]:
    """The labels of one canonical label set."""
    return [part for part in label_set_text.split(SEPARATOR) if part]


def vocabulary(class_names: list[str]) -> list[str]:
    """The sorted labels that appear in any of the label sets."""
    return sorted({label for name in class_names for label in labels_of(name)})


def indicator(class_names: list[str], label_names: list[str]) -> np.ndarray:
    """(len(class_names), len(label_names)) 0/1 matrix: row i marks the labels of set i."""
    column = {name: j for j, name in enumerate(label_names)}
    matrix = np.zeros((len(class_names), len(label_names)), dtype=np.float32)
    for i, name in enumerate(class_names):
        for label in labels_of(name):
            matrix[i, column[label]] = 1.0
    return matrix
