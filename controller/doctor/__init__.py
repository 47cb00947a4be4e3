"""`spawn doctor`: a preflight for real use. ``report`` is the pure part (results, JSON shape, exit
status), ``access`` the pure reading of permission answers, ``checks`` the AWS side."""
