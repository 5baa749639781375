"""``linescore review``: a web app to label what the model is unsure about, alone on this machine
or shared with a team by private links (:mod:`.access`, :mod:`.serving`).

Separate from the stateless scoring service and never imported by it: it reads a night's catalogue
(``linescore score-file``) and the FiberImages file it scored, keeps every vote in SQLite, and
measures how reviewers agree with each other and with the model.
"""
