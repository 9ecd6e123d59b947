"""nbgrader configuration: solutions/ is the source, exercises/ the student release."""

from pathlib import Path

c = get_config()  # noqa: F821 (provided by nbgrader)

c.CourseDirectory.root = str(Path(__file__).resolve().parent)
c.CourseDirectory.course_id = "generative-image-models"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "exercises"
# The gradebook is SQLite in the course root by default; point db_url elsewhere to share one, e.g.
# c.CourseDirectory.db_url = "postgresql://user:password@host/gradebook"

# What students see where an answer was removed.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# Student notebooks must not run forever while they are graded.
c.ExecutePreprocessor.timeout = 120
c.ExecutePreprocessor.interrupt_on_timeout = True
