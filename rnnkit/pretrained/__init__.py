"""Models shipped inside the package: ``christie/``, the character LSTM ``rnnkit complete`` uses by default."""
