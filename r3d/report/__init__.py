"""Self-contained, offline HTML reports: ``report.html`` of a ``r3d grpo`` run (curves, start/now
samples: meshes in a 3D viewer, motions as animated skeletons, images), the bench-edit page and the
eval-motion page. Everything a page needs (vendored three.js, the data) is inlined; no URL is fetched."""

from r3d.report.blocks import (
    image_cell,
    line_chart,
    mesh_cell,
    motion_cell,
    page,
)
from r3d.report.run import write_run_report

__all__ = [
    "image_cell",
    "line_chart",
    "mesh_cell",
    "motion_cell",
    "page",
    "write_run_report",
]
