"""Reports: the stage runner, figures, the metrics registry and writer, the reports index and offline plots."""
