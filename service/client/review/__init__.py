"""``linescore review``: a local web app to label what the model is unsure about.

Separate from the stateless scoring service and never imported by it: it reads a night's catalogue
(``linescore score-file``) and the FiberImages file it scored, keeps every vote in SQLite, and
measures how reviewers agree with each other and with the model.
"""
