"""linescore runtime: input contract, preprocessing, model bundle and the scoring pipeline."""
