"""The library side of each ``r3d`` command, one module per command (the CLI in ``r3d.cli`` only parses
and prints): ``runner`` (grpo, sample), ``dry_run`` (grpo --dry-run), ``export``, ``eval_motion``,
``bench_edit``, and ``outputs`` (run outputs: previews and saved samples). This layer sits above the
backend packages (models, rewards, gold, edit, vqvae) and below the CLI."""
