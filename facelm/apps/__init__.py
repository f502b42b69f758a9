"""Apps built on trained models: `facelm synth` and the JupyterLab explorer."""
