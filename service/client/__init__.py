"""The client side (score-file and its catalogue, review, labels); the server never imports it."""
