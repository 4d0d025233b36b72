"""The data side of rnnkit: the data tasks (palindrome, text, graph) and the corpora and graphs they read."""
