"""Rule qc_shapes: one table of every new cortex's QC rows, and their thickness maps."""

from cortexgen.runtime import job_log, limit_threads

limit_threads(snakemake.threads)

from cortexgen.io import atomic_output  # noqa: E402
from cortexgen.shape.figures import thickness_figure  # noqa: E402
from cortexgen.surfaces.mesh import load_shape, load_surface  # noqa: E402

with job_log(snakemake.log[0]) as log:
    # The per-shape tables share one header: keep the first, then every shape's rows.
    lines = []
    for path in snakemake.input.qc:
        table = open(path).read().splitlines()
        lines.extend(table if not lines else table[1:])
    with atomic_output(snakemake.output.tsv) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    log.info("%d shapes", len(snakemake.input.qc))
    rows = [(load_surface(mid), load_shape(thickness))
            for mid, thickness in zip(snakemake.input.left_midthickness, snakemake.input.left_thickness)]
    figure = thickness_figure(rows, snakemake.params.shapes, hemi="L")
    with atomic_output(snakemake.output.png) as tmp:
        figure.savefig(tmp, dpi=70, format="png")
