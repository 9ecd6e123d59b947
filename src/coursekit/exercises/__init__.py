"""Checks for the exercise sets (one module per set, e.g. :mod:`coursekit.exercises.ps1`).

The visible test cells of each exercise notebook call these functions, and the notebook's last
cell runs all of them through ``self_check(globals())`` to print which parts pass. The hidden
tests that decide the grade live only in the instructors' copy of the notebook.
"""
