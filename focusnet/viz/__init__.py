"""Seeing where the network looks: fixation galleries, M/P/K pathway maps and gates, effective
receptive fields, Grad-CAM, the fixation hit rate on synthetic lesions, and a self-contained
HTML report per run.

    from focusnet.viz import visualize, write_report, checkpoint_hit_rate
    visualize("results/synth-lesion_latest/best_model.pth", out="figs")   # PNG files
    write_report("results/synth-lesion_latest")                           # report.html
    checkpoint_hit_rate("results/synth-lesion_latest")                    # {"hit_rate": ...}

Figures use matplotlib's object API with the Agg renderer (no display, no pyplot state).
"""

from .hit_rate import checkpoint_hit_rate, fixation_hits, format_hit_rate, hit_rate
from .report import REPORT_FIGURES, write_report, write_report_or_warn
from .visualize import FIGURES, visualize

__all__ = ["FIGURES", "REPORT_FIGURES", "checkpoint_hit_rate", "fixation_hits", "format_hit_rate", "hit_rate", "visualize", "write_report", "write_report_or_warn"]
