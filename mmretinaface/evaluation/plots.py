"""Precision-recall plot of the WIDER FACE settings (matplotlib, Agg canvas).

Draws on a standalone ``Figure`` with an Agg canvas, so it never touches the
global pyplot backend of the calling process.
"""
import os
import os.path as osp
from typing import Mapping, Optional, Union

import numpy as np

from .widerface_protocol import PRCurve


def plot_pr_curves(curves: Mapping[str, Union[PRCurve, tuple]], out_file: str,
                   title: Optional[str] = 'WIDER FACE val') -> str:
    """Save the PR curves (one line per setting, AP in the legend) to a PNG.

    Args:
        curves: setting -> :class:`PRCurve`, or ``(precision, recall)`` arrays.
        out_file: output path; its folder is created.

    Returns:
        ``out_file``.
    """
    from ..utils.extras import require
    FigureCanvasAgg = require('matplotlib.backends.backend_agg', 'plots',
                              'plotting PR curves').FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for setting, curve in curves.items():
        if isinstance(curve, PRCurve):
            precision, recall, label = curve.precision, curve.recall, \
                f'{setting} (AP {curve.ap:.4f})'
        else:
            precision, recall = curve
            label = setting
        precision = np.asarray(precision, dtype=np.float64)
        recall = np.asarray(recall, dtype=np.float64)
        ok = np.isfinite(precision) & np.isfinite(recall)
        ax.plot(recall[ok], precision[ok], linewidth=2.0, label=label)
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel('Recall')
    ax.set_ylabel('Precision')
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if curves:
        ax.legend(loc='lower left')
    folder = osp.dirname(osp.abspath(out_file))
    os.makedirs(folder, exist_ok=True)
    fig.savefig(out_file, format='png')
    return out_file
