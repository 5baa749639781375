"""HTTP layer: Flask blueprints that only translate between HTTP and the data plane."""
