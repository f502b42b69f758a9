"""Reports: the stage runner, figures, the reports index and offline plots."""
